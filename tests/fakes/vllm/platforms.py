"""The stand-in's platform: one with vLLM's sleep mode (a GPU's), so that the CPU tests can
check how the sampler uses it; ``SLEEP_MODE`` turns it off."""

from types import SimpleNamespace

SLEEP_MODE = {"available": True}
current_platform = SimpleNamespace(is_sleep_mode_available=lambda: SLEEP_MODE["available"])
