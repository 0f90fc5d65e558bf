"""Errors a training stage stops with."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the newest checkpoint predates it and is still good."""
