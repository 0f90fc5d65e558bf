"""Whitening over the tokens a mask selects, as used for PPO advantages (and, without the
mean shift, for rewards)."""

from __future__ import annotations

import torch

from rlhf.algorithms.masked import masked_mean


def masked_whiten(
    values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps), with mean and var taken over the masked entries only.

    The variance is the population one (``unbiased=False``: divide by the number of masked
    tokens, not that number minus one), so a single token whitens to 0 instead of nan.

    Args:
        values: (B, T).
        mask: (B, T), 1 on the entries that count, 0 on padding.
        shift_mean: True (the usual choice for advantages) gives mean 0. False adds the mean
            back after scaling, so only the spread is normalised and the sign of the average
            is kept (the choice some implementations make for rewards).
        eps: added to the variance before the square root, so a constant input does not
            divide by 0.
    Returns:
        (B, T): the whitened values on masked entries, exactly 0 on masked-out entries.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    # Population variance over the masked entries (unbiased=False).
    var = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    # where() rather than a product, so non-finite padding cannot leak in as nan.
    return torch.where(mask.bool(), whitened, torch.zeros_like(whitened))
