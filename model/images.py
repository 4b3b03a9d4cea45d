"""Build the product photo transforms and the ResNet-50 image encoder."""

import logging
import pickle
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors
from torch import Tensor, nn
from torchvision import transforms
from torchvision.models import resnet50

logger = logging.getLogger(__name__)

# Channel statistics of the ImageNet training set, which torchvision's
# pretrained ResNet-50 weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULT_IMAGE_SIZE = 224

WEIGHTS_SETTING = "HSCODE_RESNET50_WEIGHTS"

WHITE = (255, 255, 255)


def pad_to_square(image: Image.Image, fill: tuple[int, ...] = WHITE) -> Image.Image:
    """Centre an image on a square canvas of its longer side, keeping its aspect."""
    width, height = image.size
    if width == height:
        return image

    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)

    canvas.paste(image, ((side - width) // 2, (side - height) // 2))

    return canvas


class PadToSquare:
    """Transform that pads a PIL image to a square with pad_to_square."""

    def __init__(self, fill: tuple[int, ...] = WHITE) -> None:
        """Store the fill colour of the padding.

        Args:
            fill: Colour of the added border, in the image's mode.
        """
        self.fill = fill

    def __call__(self, image: Image.Image) -> Image.Image:
        """Pad one image to a square."""
        return pad_to_square(image, self.fill)

    def __repr__(self) -> str:
        """Describe the transform with its fill colour."""
        return f"{type(self).__name__}(fill={self.fill})"


def create_train_transform(size: int) -> Callable[[Image.Image], Tensor]:
    """Build the augmenting transform from an RGB PIL image to [3, size, size]."""
    return transforms.Compose(
        [
            transforms.RandomHorizontalFlip(),
            transforms.RandomRotation(
                15, interpolation=transforms.InterpolationMode.BILINEAR, fill=WHITE
            ),
            transforms.ColorJitter(
                brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05
            ),
            *_square_tensor_steps(size),
        ]
    )


def create_eval_transform(size: int) -> Callable[[Image.Image], Tensor]:
    """Build the deterministic transform from an RGB PIL image to [3, size, size]."""
    return transforms.Compose(_square_tensor_steps(size))


def _square_tensor_steps(size: int) -> list[Callable]:
    """Return the steps shared by both transforms: pad, resize, normalise."""
    if size <= 0:
        raise ValueError(f"image size must be a positive number of pixels, got {size}")

    return [
        PadToSquare(),
        transforms.Resize((size, size), antialias=True),
        transforms.ToTensor(),
        transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ]


class ImageEncoder(nn.Module):
    """ResNet-50 backbone that maps photos to 2048-dimensional embeddings."""

    embedding_dim = 2048

    def __init__(self, weights_path: str | None = None, *, warn: bool = True) -> None:
        """Build the backbone and load its weights when a path is given.

        Args:
            weights_path: File containing a torchvision ResNet-50 state dict (.pth or
                .safetensors), whose fc.* keys are ignored. With None the backbone
                starts from random initialisation and a warning is logged.
            warn: Whether to log that warning. Pass False when the caller loads
                trained weights, such as a checkpoint's, right after construction.
        """
        super().__init__()

        self.backbone = resnet50(weights=None)
        self.backbone.fc = nn.Identity()

        if weights_path is not None:
            _load_backbone_weights(self.backbone, weights_path)
        elif warn:
            logger.warning(
                "No ImageNet weights found for the ResNet-50 image encoder, so it "
                "starts from random initialisation. Set %s to the path of a "
                "torchvision ResNet-50 state dict (.pth or .safetensors, for "
                "example resnet50-11ad3fa6.pth) to load them.",
                WEIGHTS_SETTING,
            )

    def forward(self, images: Tensor) -> Tensor:
        """Encode a batch of normalised images [B, 3, H, W] into [B, 2048]."""
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(
                "expected a batch of RGB images shaped [B, 3, H, W], "
                f"got shape {tuple(images.shape)}"
            )

        # Keep the input in the same memory format as the convolution weights.
        if self.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)

        return self.backbone(images)


def create_image_encoder(
    weights_path: str | None = None, channels_last: bool = False
) -> ImageEncoder:
    """Build an ImageEncoder, optionally in channels-last memory format."""
    encoder = ImageEncoder(weights_path)

    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)

    return encoder


def _load_backbone_weights(backbone: nn.Module, weights_path: str) -> None:
    """Load a torchvision ResNet-50 state dict into a backbone without fc."""
    state_dict = _read_state_dict(weights_path)

    # The classifier head is replaced by nn.Identity, so its weights are unused.
    backbone_state = {
        key: value for key, value in state_dict.items() if not key.startswith("fc.")
    }

    # strict=False keeps BatchNorm's upgrade of old checkpoints that lack
    # num_batches_tracked, and the key lists are checked below instead.
    try:
        result = backbone.load_state_dict(backbone_state, strict=False)
    except RuntimeError as exc:
        raise ValueError(
            f"failed to load ResNet-50 weights from {weights_path}: {exc}"
        ) from exc

    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"{weights_path} is not a torchvision ResNet-50 state dict: "
            f"{len(result.missing_keys)} keys missing "
            f"(first: {result.missing_keys[:3]}), "
            f"{len(result.unexpected_keys)} keys unexpected "
            f"(first: {result.unexpected_keys[:3]}). "
            f"Point {WEIGHTS_SETTING} to a file saved from "
            "torchvision.models.resnet50().state_dict()"
        )

    logger.info("Loaded ResNet-50 image encoder weights from %s", weights_path)


def _read_state_dict(weights_path: str) -> dict[str, Tensor]:
    """Read a state dict from a .safetensors file or a torch-saved .pth file."""
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(
            f"ResNet-50 weights file not found: {weights_path}. "
            f"Set {WEIGHTS_SETTING} to an existing .pth or .safetensors file"
        )

    if path.suffix == ".safetensors":
        try:
            return load_safetensors(path, device="cpu")
        except SafetensorError as exc:
            raise ValueError(
                f"failed to read ResNet-50 weights from {weights_path}: {exc}"
            ) from exc

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise ValueError(
            f"failed to read ResNet-50 weights from {weights_path}: {exc}. "
            "Expected a state dict saved with torch.save or a .safetensors file"
        ) from exc

    if not isinstance(state_dict, dict):
        raise ValueError(
            f"{weights_path} contains a {type(state_dict).__name__}, "
            "not a state dict mapping parameter names to tensors"
        )

    return state_dict
