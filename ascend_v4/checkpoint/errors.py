"""Errors raised while reading or writing checkpoints."""


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, mis-shaped or made for another config."""
