"""Training: the shared loop (every model, with resume), the GAN trainer and checkpoints."""

from pygen.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    load_checkpoint,
    load_sidecar,
    load_weights,
    save_checkpoint,
)
from pygen.train.gan import GANTrainer
from pygen.train.loop import (
    LossSteps,
    TrainConfig,
    TrainingSteps,
    batch_indices,
    draw_indices,
    set_lr,
    step_generator,
    train,
    train_steps,
)

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "GANTrainer",
    "LossSteps",
    "TrainConfig",
    "TrainingSteps",
    "batch_indices",
    "draw_indices",
    "load_checkpoint",
    "load_sidecar",
    "load_weights",
    "save_checkpoint",
    "set_lr",
    "step_generator",
    "train",
    "train_steps",
]
