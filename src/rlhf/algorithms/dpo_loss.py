"""Direct preference optimisation losses over sequence log-probs (Rafailov et al. 2023), with
the IPO (Azar et al. 2023) and conservative DPO (cDPO, label smoothing) variants.

Every input is (B,): the summed log-prob of the whole answer (chosen y_w or rejected y_l)
under the policy or the frozen reference. The implicit reward of an answer is
beta * (log pi(y|x) - log ref(y|x)); DPO widens the chosen-minus-rejected gap of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlhf.config import DPO_LOSSES, REFERENCE_FREE_LOSSES


@dataclass
class DPOOutput:
    """``loss`` is the batch mean (with gradient); the rest are detached (B,) tensors."""

    loss: torch.Tensor
    losses: torch.Tensor  # per pair
    chosen_rewards: torch.Tensor  # beta * (log pi(y_w) - log ref(y_w))
    rejected_rewards: torch.Tensor  # beta * (log pi(y_l) - log ref(y_l))

    @property
    def margins(self) -> torch.Tensor:
        return self.chosen_rewards - self.rejected_rewards

    @property
    def accuracy(self) -> torch.Tensor:
        """Share of pairs whose chosen answer has the strictly larger implicit reward."""
        return (self.margins > 0).float().mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> DPOOutput:
    """DPO, cDPO or IPO loss of a batch of preference pairs.

    With h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)) per pair:

    - ``"sigmoid"`` (DPO): -log sigmoid(beta * h). With ``label_smoothing`` eps > 0 it is
      cDPO, which assumes each label is flipped with probability eps:
      -(1 - eps) * log sigmoid(beta * h) - eps * log sigmoid(-beta * h). Its minimum is at a
      finite h, so noisy labels cannot push the margin to infinity.
    - ``"ipo"``: (h - 1 / (2 * beta))^2, regressing the gap to a fixed target instead of
      pushing it up without bound (beta is IPO's tau; ``label_smoothing`` must be 0).

    Args:
        policy_chosen, policy_rejected: (B,) summed answer log-probs under the policy.
        ref_chosen, ref_rejected: (B,) the same under the frozen reference (no gradient).
        beta: strength of the implicit KL constraint (larger: stay closer to the reference).
        loss_type: ``"sigmoid"`` or ``"ipo"`` (the reference-free ``DPO_LOSSES`` have their
            own functions: ``simpo_loss``, ``orpo_loss``).
        label_smoothing: cDPO's eps in [0, 0.5).
    Returns:
        ``DPOOutput`` with the mean loss, per-pair losses and implicit rewards.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    chosen_ratio = policy_chosen - ref_chosen.detach()
    rejected_ratio = policy_rejected - ref_rejected.detach()
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        # logsigmoid is the numerically stable log(sigmoid(x)) for large |x|.
        losses = -(1.0 - label_smoothing) * F.logsigmoid(beta * h)
        if label_smoothing > 0:
            losses = losses - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        if label_smoothing:
            raise ValueError("label_smoothing applies to the sigmoid loss only, not to IPO")
        losses = (h - 1.0 / (2.0 * beta)) ** 2
    else:
        known = [name for name in DPO_LOSSES if name not in REFERENCE_FREE_LOSSES]
        raise ValueError(f"unknown DPO loss {loss_type!r}; known: {', '.join(known)}")
    return DPOOutput(
        losses.mean(),
        losses.detach(),
        beta * chosen_ratio.detach(),
        beta * rejected_ratio.detach(),
    )
