"""Controllers for the KL coefficients: the reward's KL-to-reference penalty (Ziegler et al.
2019, "Fine-Tuning Language Models from Human Preferences") and PPO-Penalty's beta (Schulman
et al. 2017, section 4). All keep their one piece of state in ``value`` and checkpoint it
with ``state_dict()`` / ``load_state_dict()``; the settings come from the constructor."""

from __future__ import annotations


class AdaptiveKLController:
    """Proportional control of the KL coefficient toward a target KL (Ziegler et al. 2019):

        e = clip(current_kl / target - 1, -0.2, 0.2)
        coef <- coef * (1 + e * n_steps / horizon)

    Args:
        init_coef: starting coefficient.
        target: the KL (per sequence, in the same units as ``current_kl``) to steer toward.
        horizon: how many steps (samples) a full 20% correction is spread over.
    """

    def __init__(self, init_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"target and horizon must be > 0, got {target}, {horizon}")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        # Proportional error, clipped to +-20% so one odd batch cannot swing the coefficient.
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient with the ``AdaptiveKLController`` interface."""

    def __init__(self, coef: float) -> None:
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Does nothing: the coefficient is fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def make_kl_controller(
    kind: str, init_coef: float, target: float | None = None, horizon: float | None = None
) -> AdaptiveKLController | FixedKLController:
    """``"adaptive"`` (needs ``target`` and ``horizon``) or ``"fixed"``."""
    if kind == "fixed":
        return FixedKLController(init_coef)
    if kind == "adaptive":
        if target is None or horizon is None:
            raise ValueError("an adaptive KL controller needs target and horizon")
        return AdaptiveKLController(init_coef, target, horizon)
    raise ValueError(f"unknown KL controller {kind!r}; known: adaptive, fixed")


class AdaptivePenaltyCoef:
    """PPO-Penalty's beta, adapted after each policy update (PPO paper, section 4), with
    d the measured KL(pi_old || pi_new):

        d < target_kl / 1.5  ->  beta /= 2   (too timid: penalise less)
        d > target_kl * 1.5  ->  beta *= 2   (moved too far: penalise more)
        otherwise beta is unchanged.

    The paper notes 1.5 and 2 are heuristic and the result is not sensitive to them.
    """

    def __init__(self, init: float, target_kl: float) -> None:
        if target_kl <= 0:
            raise ValueError(f"target_kl must be > 0, got {target_kl}")
        self.value = float(init)
        self.target_kl = float(target_kl)

    def update(self, kl: float) -> float:
        """Adapt beta to the measured KL; returns the new beta."""
        if kl < self.target_kl / 1.5:
            self.value /= 2.0
        elif kl > self.target_kl * 1.5:
            self.value *= 2.0
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
