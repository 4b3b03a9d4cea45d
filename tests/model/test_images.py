"""Tests for the photo transforms and the ResNet-50 image encoder."""

import logging
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torchvision.models import resnet50

from model.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageEncoder,
    create_eval_transform,
    create_image_encoder,
    create_train_transform,
    pad_to_square,
)

RED = (255, 0, 0)
WHITE = (255, 255, 255)


@pytest.fixture(scope="module")
def source_encoder() -> ImageEncoder:
    """Return a randomly initialised encoder whose weights tests save and reload."""
    torch.manual_seed(0)
    return ImageEncoder().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Return a fixed batch of two 64x64 images."""
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 3, 64, 64, generator=generator)


def encode(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Run an encoder in evaluation mode without gradients."""
    encoder.eval()
    with torch.no_grad():
        return encoder(images)


def test_pad_to_square_wide_shape() -> None:
    padded = pad_to_square(Image.new("RGB", (40, 20), RED))

    assert padded.size == (40, 40)


def test_pad_to_square_wide_centred() -> None:
    padded = pad_to_square(Image.new("RGB", (40, 20), RED))

    # The 20-pixel-high image sits in rows 10..29.
    assert padded.getpixel((20, 9)) == WHITE
    assert padded.getpixel((20, 10)) == RED
    assert padded.getpixel((20, 29)) == RED
    assert padded.getpixel((20, 30)) == WHITE


def test_pad_to_square_tall_centred() -> None:
    padded = pad_to_square(Image.new("RGB", (20, 40), RED))

    assert padded.size == (40, 40)
    assert padded.getpixel((9, 20)) == WHITE
    assert padded.getpixel((10, 20)) == RED
    assert padded.getpixel((30, 20)) == WHITE


def test_pad_to_square_fill_colour() -> None:
    padded = pad_to_square(Image.new("RGB", (4, 2), RED), fill=(0, 0, 0))

    assert padded.getpixel((0, 0)) == (0, 0, 0)


def test_pad_to_square_keeps_square() -> None:
    padded = pad_to_square(Image.new("RGB", (30, 30), RED))

    assert padded.size == (30, 30)


@pytest.mark.parametrize("create", [create_train_transform, create_eval_transform])
def test_transform_output(create) -> None:
    transform = create(64)

    output = transform(Image.new("RGB", (90, 50), RED))

    assert output.shape == (3, 64, 64)
    assert output.dtype == torch.float32


def test_eval_transform_normalises_padding() -> None:
    output = create_eval_transform(32)(Image.new("RGB", (40, 20), RED))

    # White padding in the top rows becomes (1 - mean) / std per channel.
    expected = torch.tensor(
        [
            (1 - mean) / std
            for mean, std in zip(IMAGENET_MEAN, IMAGENET_STD, strict=True)
        ]
    )
    torch.testing.assert_close(output[:, 0, 16], expected)


def test_eval_transform_deterministic() -> None:
    transform = create_eval_transform(32)
    image = Image.effect_noise((48, 32), 40).convert("RGB")

    assert torch.equal(transform(image), transform(image))


def test_transform_rejects_zero_size() -> None:
    with pytest.raises(ValueError, match="got 0"):
        create_eval_transform(0)


def test_encoder_forward_shape(source_encoder, images) -> None:
    output = encode(source_encoder, images)

    assert output.shape == (2, 2048)
    assert source_encoder.embedding_dim == 2048


def test_encoder_rejects_wrong_shape(source_encoder) -> None:
    with pytest.raises(ValueError, match=re.escape("(3, 64, 64)")):
        source_encoder(torch.zeros(3, 64, 64))


def test_encoder_loads_pth(tmp_path: Path, source_encoder, images) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(source_encoder.backbone.state_dict(), path)

    loaded = ImageEncoder(str(path))

    assert torch.equal(encode(loaded, images), encode(source_encoder, images))


def test_encoder_loads_safetensors(tmp_path: Path, source_encoder, images) -> None:
    path = tmp_path / "resnet50.safetensors"
    save_file(source_encoder.backbone.state_dict(), str(path))

    loaded = ImageEncoder(str(path))

    assert torch.equal(encode(loaded, images), encode(source_encoder, images))


def test_encoder_ignores_fc_keys(tmp_path: Path, images) -> None:
    torch.manual_seed(2)
    classifier = resnet50(weights=None)
    path = tmp_path / "resnet50-classifier.pth"
    torch.save(classifier.state_dict(), path)

    loaded = ImageEncoder(str(path))

    classifier.fc = nn.Identity()
    assert torch.equal(encode(loaded, images), encode(classifier, images))


def test_encoder_missing_keys_error(tmp_path: Path, source_encoder) -> None:
    state_dict = source_encoder.backbone.state_dict()
    del state_dict["layer4.2.bn3.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state_dict, path)

    with pytest.raises(ValueError, match=re.escape(str(path))) as error:
        ImageEncoder(str(path))

    assert "layer4.2.bn3.weight" in str(error.value)


def test_encoder_missing_file_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.pth"

    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        ImageEncoder(str(path))


def test_encoder_warns_without_weights(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="model.images"):
        ImageEncoder()

    assert "HSCODE_RESNET50_WEIGHTS" in caplog.text


def test_encoder_quiet_when_not_warned(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="model.images"):
        ImageEncoder(warn=False)

    assert caplog.records == []


def test_encoder_quiet_with_weights(tmp_path: Path, source_encoder, caplog) -> None:
    path = tmp_path / "resnet50.pth"
    torch.save(source_encoder.backbone.state_dict(), path)

    with caplog.at_level(logging.WARNING, logger="model.images"):
        ImageEncoder(str(path))

    assert caplog.records == []


def test_create_encoder_channels_last(images) -> None:
    encoder = create_image_encoder(channels_last=True)

    output = encode(encoder, images)

    weight = encoder.backbone.conv1.weight
    assert weight.is_contiguous(memory_format=torch.channels_last)
    assert output.shape == (2, 2048)


def test_encoder_loads_without_batch_counts(tmp_path: Path, source_encoder) -> None:
    # Checkpoints saved by older PyTorch versions have no BatchNorm
    # num_batches_tracked entries, and BatchNorm fills them in on load.
    state_dict = {
        key: value
        for key, value in source_encoder.backbone.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    path = tmp_path / "resnet50-old.pth"
    torch.save(state_dict, path)

    loaded = ImageEncoder(str(path))

    assert torch.equal(
        loaded.backbone.conv1.weight, source_encoder.backbone.conv1.weight
    )
