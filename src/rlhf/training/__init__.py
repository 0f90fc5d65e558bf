"""Pieces every training stage shares: batching, LR schedule, checkpoints, the step loop."""
