"""Training loops."""

from pygen.train.gan import GANTrainer

__all__ = ["GANTrainer"]
