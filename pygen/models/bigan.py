"""BiGAN (Donahue et al. 2017; ALI, Dumoulin et al. 2017): a generator G(z), an encoder E(x) and a
discriminator D(x, z) on the joint. D tells data pairs (x, E(x)) from generated pairs (G(z), z);
G and E fool it together, which at the optimum makes E invert G. E is then the inference network.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pygen.losses.gan import NonSaturatingLoss
from pygen.models.gan import MLPGenerator, _mlp
from pygen.utils.grad import frozen
from pygen.utils.random import standard_normal
from pygen.utils.state import Resumable


class JointDiscriminator(nn.Module):
    """MLP on the concatenated pair ``(x, z)`` to one raw score (a logit) per sample ``(N,)``."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: int = 128, depth: int = 3) -> None:
        super().__init__()
        self.net = _mlp([data_dim + latent_dim, *[hidden] * depth, 1], nn.LeakyReLU)

    def forward(self, x: Tensor, z: Tensor) -> Tensor:
        return self.net(torch.cat([x.flatten(1), z], dim=1)).flatten()


class BiGAN(nn.Module):
    """MLP BiGAN for vectors of ``data_dim``: ``generator`` (z -> x), ``encoder`` (x -> z),
    ``discriminator`` (x, z -> logit). ``encode`` is inference, ``reconstruct`` is G(E(x))."""

    def __init__(
        self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 128, depth: int = 3
    ) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.generator = MLPGenerator(latent_dim, data_dim, hidden, depth)
        self.encoder = _mlp([data_dim, *[hidden] * depth, latent_dim], nn.ReLU)
        self.discriminator = JointDiscriminator(data_dim, latent_dim, hidden, depth)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _check(self, x: Tensor) -> None:
        # The MLP encoder maps the last dimension only: an image batch gave codes of a wrong shape.
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(
                f"BiGAN takes vectors (N, {self.data_dim}) (flatten images first), "
                f"got {tuple(x.shape)}"
            )

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples G(z), ``z ~ N(0, I)``."""
        weight = next(self.parameters())
        z = standard_normal(
            (n, self.latent_dim), generator, device=weight.device, dtype=weight.dtype
        )
        return self.generator(z)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """E(x): the inferred latent codes ``(N, latent_dim)``."""
        self._check(x)
        return self.encoder(x)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """G(E(x))."""
        self._check(x)
        return self.generator(self.encoder(x))

    def losses(self, real: Tensor) -> tuple[Tensor, Tensor]:
        """(D loss, G+E loss) on a real batch and as many prior draws, both non-saturating:
        G and E minimize D's loss with the labels of the two kinds of pairs swapped."""
        self._check(real)
        z = torch.randn(len(real), self.latent_dim, device=real.device, dtype=real.dtype)
        data_out = self.discriminator(real, self.encoder(real))
        fake_out = self.discriminator(self.generator(z), z)
        loss = NonSaturatingLoss()
        return loss.discriminator_loss(data_out, fake_out), loss.discriminator_loss(
            fake_out, data_out
        )

    def fit(
        self,
        data: Tensor,
        steps: int,
        batch_size: int = 128,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> list[dict[str, float]]:
        """``steps`` alternating updates (``BiGANTrainer``) on batches drawn with replacement
        from ``data``. Returns the history of losses."""
        trainer = BiGANTrainer(self, lr, betas)
        history = []
        for step in range(1, steps + 1):
            real = data[torch.randint(len(data), (batch_size,))].to(self._device())
            history.append({"step": step, **trainer.step(real)})
        return history


class BiGANTrainer(Resumable):
    """Adam on a ``BiGAN``: ``step(real)`` updates D, then G and E together (D frozen).

    Args:
        model: the ``BiGAN`` to train.
        lr: Adam learning rate of D and of G and E (one optimizer for the two).
        betas: Adam betas of both optimizers (DCGAN's (0.5, 0.999)).
    """

    resumable = ("d_opt", "ge_opt")

    def __init__(
        self, model: BiGAN, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)
    ) -> None:
        self.model = model
        self.d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=lr, betas=betas)
        ge_params = [*model.generator.parameters(), *model.encoder.parameters()]
        self.ge_opt = torch.optim.Adam(ge_params, lr=lr, betas=betas)

    def step(self, real: Tensor) -> dict[str, float]:
        """One update of each side on the batch ``real``; returns ``d_loss`` and ``ge_loss``."""
        model = self.model
        d_loss, _ = model.losses(real)
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        # D frozen for the G/E step: its gradients would be wasted work.
        with frozen(model.discriminator):
            _, ge_loss = model.losses(real)
            self.ge_opt.zero_grad(set_to_none=True)
            ge_loss.backward()
            self.ge_opt.step()
        return {"d_loss": d_loss.item(), "ge_loss": ge_loss.item()}
