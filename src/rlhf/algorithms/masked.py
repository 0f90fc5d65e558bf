"""Reductions over the tokens a mask selects. ``mask`` is 1 for counted tokens, 0 otherwise."""

from __future__ import annotations

import torch


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is 1. Shapes: values and mask (B, T)."""
    return (values * mask).sum() if dim is None else (values * mask).sum(dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the tokens ``mask`` selects (0 when it selects none).

    Shapes: values and mask (B, T); the result is a scalar, or (B,) with ``dim=1``."""
    mask = mask.to(values.dtype)
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1.0)
