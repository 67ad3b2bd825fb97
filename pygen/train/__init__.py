"""Training: the shared loop, checkpoints and resume."""

from pygen.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from pygen.train.loop import TrainConfig, batch_indices, train

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "TrainConfig",
    "batch_indices",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "train",
]
