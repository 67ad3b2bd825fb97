"""Image-to-image translation: CycleGAN (Zhu et al. 2017) for unpaired domains and pix2pix
(Isola et al. 2017) for paired ones, with their ResNet / U-Net generators, the PatchGAN
discriminator and CycleGAN's pool of past generated images.

Images are ``(N, C, H, W)`` in ``[-1, 1]`` (the generators end in Tanh).
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pygen.losses.gan import LeastSquaresLoss, NonSaturatingLoss
from pygen.utils.grad import frozen
from pygen.utils.state import Resumable


class ResnetBlock(nn.Module):
    """``x + conv-norm-relu-conv-norm(x)`` with reflection padding (3x3 convolutions)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
            nn.ReLU(),
            nn.ReflectionPad2d(1),
            nn.Conv2d(ch, ch, 3),
            nn.InstanceNorm2d(ch),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator (Johnson et al. 2016): a 7x7 convolution, ``n_down`` stride-2
    downsamplings (channels doubling), ``n_blocks`` residual blocks, as many upsamplings, a 7x7
    convolution to ``channels`` and Tanh; instance norm throughout. The paper uses width 64,
    2 downsamplings, 9 blocks at 256x256 (6 at 128x128)."""

    def __init__(
        self, channels: int = 3, width: int = 64, n_blocks: int = 9, n_down: int = 2
    ) -> None:
        super().__init__()
        self.n_down = n_down
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, width, 7),
            nn.InstanceNorm2d(width),
            nn.ReLU(),
        ]
        ch = width
        for _ in range(n_down):
            layers += [nn.Conv2d(ch, 2 * ch, 3, 2, 1), nn.InstanceNorm2d(2 * ch), nn.ReLU()]
            ch *= 2
        layers += [ResnetBlock(ch) for _ in range(n_blocks)]
        for _ in range(n_down):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 3, 2, 1, output_padding=1)]
            layers += [nn.InstanceNorm2d(ch // 2), nn.ReLU()]
            ch //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, channels, 7), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        # The downsamplings round odd sizes up and the upsamplings double: another size would come
        # back silently resized (10x10 -> 12x12).
        _check_divisible(x, 2**self.n_down, "ResnetGenerator", f"n_down={self.n_down}")
        return self.net(x)


def _check_divisible(x: Tensor, factor: int, name: str, why: str) -> None:
    if x.dim() != 4 or x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(
            f"{name} ({why}) needs images (N, C, H, W) with H and W divisible by {factor}, "
            f"got {tuple(x.shape)}"
        )


class UNetGenerator(nn.Module):
    """pix2pix's U-Net: ``depth`` stride-2 4x4 convolutions down to ``size / 2^depth`` (1x1 when
    ``depth = log2(size)``), then transposed convolutions back up, each concatenating the encoder
    features of its resolution (the skips carry the low-level structure input and output share).
    Batch norm on inner layers, LeakyReLU(0.2) down, ReLU up, Tanh out; ``dropout`` after the
    first three up layers (those but the output), pix2pix's noise (in training mode only)."""

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        width: int = 64,
        depth: int = 8,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.depth = depth
        chs = [min(width * 2**i, width * 8) for i in range(depth)]
        self.down = nn.ModuleList()
        prev = in_channels
        for i, ch in enumerate(chs):
            norm = i not in (0, depth - 1)  # no norm on the input layer nor the 1x1 bottleneck
            self.down.append(
                nn.Sequential(
                    nn.Conv2d(prev, ch, 4, 2, 1, bias=not norm),
                    nn.BatchNorm2d(ch) if norm else nn.Identity(),
                )
            )
            prev = ch
        self.up = nn.ModuleList()
        for i in reversed(range(depth)):
            out = chs[i - 1] if i > 0 else out_channels
            skip_in = chs[i] if i == depth - 1 else 2 * chs[i]  # the innermost has no skip yet
            last = i == 0
            noisy = not last and i >= depth - 3
            self.up.append(
                nn.Sequential(
                    nn.ReLU(),
                    nn.ConvTranspose2d(skip_in, out, 4, 2, 1, bias=last),
                    nn.Tanh() if last else nn.BatchNorm2d(out),
                    *([nn.Dropout(dropout)] if noisy and dropout > 0 else []),
                )
            )

    def forward(self, x: Tensor) -> Tensor:
        _check_divisible(x, 2**self.depth, "UNetGenerator", f"depth={self.depth}")
        skips = []
        for i, layer in enumerate(self.down):
            x = layer(x if i == 0 else F.leaky_relu(x, 0.2))
            skips.append(x)
        x = self.up[0](skips.pop())
        for layer in self.up[1:]:
            x = layer(torch.cat([x, skips.pop()], dim=1))
        return x


def patch_layers(image_size: int) -> int:
    """Stride-2 layers of a PatchGAN for ``image_size``: 3 (the 70x70 PatchGAN) from 32 up,
    fewer for small images so that the output keeps at least a 2x2 map of patches."""
    if image_size < 8:
        raise ValueError(f"PatchGAN needs images of at least 8x8, got {image_size}")
    return min(3, image_size.bit_length() - 3)  # 8 -> 1, 16 -> 2, >= 32 -> 3


class PatchDiscriminator(nn.Module):
    """PatchGAN (Isola et al. 2017): ``n_layers`` stride-2 4x4 convolutions, one stride-1, then a
    1-channel 4x4 convolution: one raw score per overlapping patch ``(N, 1, h, w)``. Instance
    norm on all but the first layer, LeakyReLU(0.2)."""

    def __init__(self, channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for i in range(1, n_layers + 1):
            out = min(ch * 2, width * 8)
            stride = 2 if i < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1), nn.InstanceNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        layers += [nn.Conv2d(ch, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class ImagePool:
    """Shrivastava et al. 2017's history of generated images: D sees, per image, the new one or
    (with probability 1/2 once the pool is full) a stored older one, which takes the new one's
    place; this damps the oscillation of the two players."""

    def __init__(self, size: int = 50, seed: int = 0) -> None:
        self.size = size
        self.images: list[Tensor] = []
        self.rng = random.Random(seed)

    def query(self, images: Tensor) -> Tensor:
        """The batch D sees in place of the generated ``images`` ``(N, ...)``, detached, image by
        image: while the pool holds fewer than ``size`` images, the new one (also stored); then,
        with probability 1/2, a stored one drawn at random (the new one takes its place), else the
        new one. With ``size`` 0, ``images`` themselves, detached (D's loss must not reach G's
        graph, which G's own step has freed)."""
        if self.size == 0:
            return images.detach()
        out = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif self.rng.random() < 0.5:
                i = self.rng.randrange(self.size)
                out.append(self.images[i])
                self.images[i] = image
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, Any]:
        """The stored images (on their device) and the generator's state."""
        return {"images": list(self.images), "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.images = list(state["images"])
        self.rng.setstate(state["rng"])


def _adam(module: nn.Module, lr: float, betas: tuple[float, float]) -> torch.optim.Adam:
    return torch.optim.Adam(module.parameters(), lr=lr, betas=betas)


def _batch(data: Tensor, batch_size: int, device: torch.device) -> Tensor:
    return data[torch.randint(len(data), (batch_size,))].to(device)


class CycleGAN(nn.Module):
    """Unpaired translation between domains A and B: generators ``g_ab``, ``g_ba`` (ResNet),
    PatchGAN discriminators ``d_a``, ``d_b``; least-squares adversarial losses, an L1
    cycle-consistency term (``cycle_weight``, 10 in the paper) and an L1 identity term
    (``identity_weight`` times the cycle weight, 0.5 in the paper; 0 disables it: it assumes the
    mapping keeps an image of the target domain unchanged, false e.g. for an intensity
    inversion). D trains on pools of the last ``pool_size`` generated images.

    Args:
        channels: C of the images of both domains.
        image_size: H = W of the images: divisible by ``2^n_down`` and at least 8; it sets the
            PatchGANs' depth (``patch_layers``: the 70x70 PatchGAN from 32 up).
        width: channels of the generators' first convolution, doubling at each downsampling
            (the paper: 64).
        n_blocks: residual blocks of each generator (the paper: 9 at 256x256, 6 at 128x128).
        n_down: stride-2 downsamplings (and as many upsamplings) of each generator (the
            paper: 2).
        d_width: channels of the discriminators' first convolution, doubling per layer up to
            8x (the paper: 64).
        cycle_weight: weight of the L1 cycle-consistency term (the paper's lambda, 10).
        identity_weight: weight of the L1 identity term relative to ``cycle_weight`` (the
            paper: 0.5); 0 disables it.
        pool_size: images in each discriminator's ``ImagePool`` (the paper: 50).
    """

    def __init__(
        self,
        channels: int = 3,
        image_size: int = 256,
        width: int = 64,
        n_blocks: int = 9,
        n_down: int = 2,
        d_width: int = 64,
        cycle_weight: float = 10.0,
        identity_weight: float = 0.5,
        pool_size: int = 50,
    ) -> None:
        super().__init__()
        if image_size % 2**n_down:
            raise ValueError(
                f"CycleGAN with n_down={n_down} needs image_size divisible by {2**n_down}, "
                f"got {image_size}"
            )
        self.g_ab = ResnetGenerator(channels, width, n_blocks, n_down)
        self.g_ba = ResnetGenerator(channels, width, n_blocks, n_down)
        layers = patch_layers(image_size)
        self.d_a = PatchDiscriminator(channels, d_width, layers)
        self.d_b = PatchDiscriminator(channels, d_width, layers)
        self.cycle_weight, self.identity_weight = cycle_weight, identity_weight
        self.pool_a, self.pool_b = ImagePool(pool_size), ImagePool(pool_size, seed=1)
        self.gan_loss = LeastSquaresLoss()

    @torch.no_grad()
    def translate_ab(self, a: Tensor) -> Tensor:
        """A -> B."""
        return self.g_ab(a)

    @torch.no_grad()
    def translate_ba(self, b: Tensor) -> Tensor:
        """B -> A."""
        return self.g_ba(b)

    def generator_loss(self, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(G loss, fake B, fake A) on one batch of each domain."""
        fake_b, fake_a = self.g_ab(a), self.g_ba(b)
        # The paper's generator term is the squared error itself, weight 1 beside the cycle's
        # 10; LSGAN's generator loss is half of it.
        g_loss = self.gan_loss.generator_loss
        adversarial = 2 * (g_loss(self.d_b(fake_b)) + g_loss(self.d_a(fake_a)))
        cycle = F.l1_loss(self.g_ba(fake_b), a) + F.l1_loss(self.g_ab(fake_a), b)
        loss = adversarial + self.cycle_weight * cycle
        if self.identity_weight > 0:
            identity = F.l1_loss(self.g_ab(b), b) + F.l1_loss(self.g_ba(a), a)
            loss = loss + self.identity_weight * self.cycle_weight * identity
        return loss, fake_b, fake_a

    def fit(
        self,
        a: Tensor,
        b: Tensor,
        steps: int,
        batch_size: int = 1,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> list[dict[str, float]]:
        """``steps`` updates (``CycleGANTrainer``) on independent random batches of ``a`` and
        ``b`` (unpaired). Returns the history of losses."""
        device = next(self.parameters()).device
        trainer = CycleGANTrainer(self, lr, betas)
        history = []
        for step in range(1, steps + 1):
            real_a, real_b = _batch(a, batch_size, device), _batch(b, batch_size, device)
            history.append({"step": step, **trainer.step(real_a, real_b)})
        return history


class CycleGANTrainer(Resumable):
    """Adam on a ``CycleGAN``: ``step(a, b)`` updates both generators, then both
    discriminators on the model's pools of generated images (part of the state).

    Args:
        model: the ``CycleGAN`` to train (its pools are shared, not copied).
        lr: Adam learning rate of the generators and of the discriminators (the paper's 2e-4;
            constant here, without the paper's linear decay).
        betas: Adam betas of both optimizers (DCGAN's (0.5, 0.999)).
    """

    resumable = ("g_opt", "d_opt", "pool_a", "pool_b")

    def __init__(
        self, model: CycleGAN, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)
    ) -> None:
        self.model = model
        generators = [*model.g_ab.parameters(), *model.g_ba.parameters()]
        self.g_opt = torch.optim.Adam(generators, lr=lr, betas=betas)
        discriminators = [*model.d_a.parameters(), *model.d_b.parameters()]
        self.d_opt = torch.optim.Adam(discriminators, lr=lr, betas=betas)
        self.pool_a, self.pool_b = model.pool_a, model.pool_b

    def step(self, real_a: Tensor, real_b: Tensor) -> dict[str, float]:
        """One update of each side on a batch of each domain; returns ``g_loss``, ``d_loss``."""
        model = self.model
        with frozen(model.d_a, model.d_b):
            g_loss, fake_b, fake_a = model.generator_loss(real_a, real_b)
            self.g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            self.g_opt.step()
        past_b, past_a = self.pool_b.query(fake_b), self.pool_a.query(fake_a)
        loss = model.gan_loss.discriminator_loss
        d_loss = loss(model.d_b(real_b), model.d_b(past_b)) + loss(
            model.d_a(real_a), model.d_a(past_a)
        )
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        return {"g_loss": g_loss.item(), "d_loss": d_loss.item()}


class Pix2Pix(nn.Module):
    """Paired translation A -> B: a U-Net generator and a PatchGAN on the concatenated pair
    (input, output); G minimizes the non-saturating GAN loss plus ``l1_weight`` (100 in the
    paper) times the L1 distance to the paired target, D half its GAN loss. The generator's
    ``dropout`` is its noise: ``translate`` runs G in eval mode by default (deterministic, batch
    norm's running statistics) or, with ``stochastic=True``, as the paper does at test time.

    Args:
        in_channels: C of the input images (domain A).
        out_channels: C of the output images (domain B).
        image_size: H = W of the images, a power of two >= 8: the U-Net goes down to 1x1
            (``log2(image_size)`` layers, 8 at 256x256 as in the paper) and it sets the
            PatchGAN's depth (``patch_layers``: the 70x70 PatchGAN from 32 up).
        width: channels of the U-Net's first layer, doubling per layer up to 8x (the paper: 64).
        d_width: channels of the PatchGAN's first layer, doubling per layer up to 8x (the
            paper: 64); it sees ``in_channels + out_channels`` (input and output concatenated).
        l1_weight: weight of the L1 term (the paper's lambda, 100).
        dropout: dropout probability of the U-Net's first three up layers, never the output
            layer (the paper: 0.5); 0 for none.
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        image_size: int = 256,
        width: int = 64,
        d_width: int = 64,
        l1_weight: float = 100.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if image_size & (image_size - 1) or image_size < 8:
            raise ValueError(f"pix2pix image_size must be a power of two >= 8, got {image_size}")
        depth = image_size.bit_length() - 1  # down to a 1x1 bottleneck
        self.generator = UNetGenerator(in_channels, out_channels, width, depth, dropout)
        self.discriminator = PatchDiscriminator(
            in_channels + out_channels, d_width, patch_layers(image_size)
        )
        self.l1_weight = l1_weight
        self.gan_loss = NonSaturatingLoss()

    @torch.no_grad()
    def translate(self, a: Tensor, stochastic: bool = False) -> Tensor:
        """A -> B. Default: eval mode (no dropout, batch norm's running statistics).
        ``stochastic=True``: as in the paper's tests, dropout on and batch norm over the batch's
        own statistics, so that repeated calls draw different outputs; the running statistics
        are left as they were."""
        generator, was_training = self.generator, self.generator.training
        running = [(b, b.clone()) for b in generator.buffers()] if stochastic else []
        generator.train(stochastic)
        try:
            return generator(a)
        finally:
            generator.train(was_training)
            for buffer, saved in running:
                buffer.copy_(saved)

    def fit(
        self,
        a: Tensor,
        b: Tensor,
        steps: int,
        batch_size: int = 1,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.5, 0.999),
    ) -> list[dict[str, float]]:
        """``steps`` updates (``Pix2PixTrainer``) on random batches of the pairs
        ``(a[i], b[i])``."""
        if len(a) != len(b):
            raise ValueError(f"paired data needs as many inputs as targets, got {len(a)}, {len(b)}")
        device = next(self.parameters()).device
        trainer = Pix2PixTrainer(self, lr, betas)
        history = []
        for step in range(1, steps + 1):
            idx = torch.randint(len(a), (batch_size,))
            history.append({"step": step, **trainer.step(a[idx].to(device), b[idx].to(device))})
        return history


class Pix2PixTrainer(Resumable):
    """Adam on a ``Pix2Pix``: ``step(a, b)`` updates D, then G (D frozen), on paired batches.

    Args:
        model: the ``Pix2Pix`` to train.
        lr: Adam learning rate of the generator and of the discriminator (the paper's 2e-4).
        betas: Adam betas of both optimizers (the paper's (0.5, 0.999)).
    """

    resumable = ("g_opt", "d_opt")

    def __init__(
        self, model: Pix2Pix, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999)
    ) -> None:
        self.model = model
        self.g_opt = _adam(model.generator, lr, betas)
        self.d_opt = _adam(model.discriminator, lr, betas)

    def step(self, real_a: Tensor, real_b: Tensor) -> dict[str, float]:
        """One update of each side on the pairs ``(real_a[i], real_b[i])``; returns
        ``g_loss``, ``d_loss``."""
        model = self.model
        fake_b = model.generator(real_a)
        # Halved, as in the paper, to slow D down relative to G.
        d_loss = 0.5 * model.gan_loss.discriminator_loss(
            model.discriminator(torch.cat([real_a, real_b], 1)),
            model.discriminator(torch.cat([real_a, fake_b.detach()], 1)),
        )
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_opt.step()
        with frozen(model.discriminator):
            adversarial = model.gan_loss.generator_loss(
                model.discriminator(torch.cat([real_a, fake_b], 1))
            )
            g_loss = adversarial + model.l1_weight * F.l1_loss(fake_b, real_b)
            self.g_opt.zero_grad(set_to_none=True)
            g_loss.backward()
            self.g_opt.step()
        return {"g_loss": g_loss.item(), "d_loss": d_loss.item()}
