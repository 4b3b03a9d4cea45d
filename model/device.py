"""Choosing the torch device."""

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """Return CUDA for "auto" when a GPU is visible, else the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"device {name!r} requested but no CUDA GPU is visible; "
            "set HSCODE_DEVICE=cpu or auto"
        )
    return device
