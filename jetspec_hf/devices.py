"""Waiting for a device, so that a host timer read afterwards covers the work queued on it."""

from __future__ import annotations

import torch


def synchronize(device: torch.device | str) -> None:
    """Wait for every kernel queued on `device` (accelerators run asynchronously; a CPU has nothing to wait for)."""
    device = torch.device(device)
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


__all__ = ["synchronize"]
