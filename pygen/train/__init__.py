"""Training: the shared loop for likelihood models, the GAN trainer, checkpoints and resume."""

from pygen.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_weights,
    save_checkpoint,
)
from pygen.train.gan import GANTrainer
from pygen.train.loop import TrainConfig, batch_indices, train

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "GANTrainer",
    "TrainConfig",
    "batch_indices",
    "load_checkpoint",
    "load_weights",
    "save_checkpoint",
    "train",
]
