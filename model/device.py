"""Choosing the torch device."""

from functools import cache

import torch

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags of native bf16 arithmetic; without them bf16 is emulated, and slower."""


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


@cache
def cpu_has_native_bf16() -> bool:
    """Return whether this CPU computes in bf16 natively (AVX-512 BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as file:
            flags = next((line for line in file if line.startswith("flags")), "")
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_CPU_FLAGS)
