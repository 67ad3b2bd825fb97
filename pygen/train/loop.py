"""The training loop shared by every model: seeded batches, progress bar, metrics log (JSONL),
atomic checkpoints with bit-for-bit resume; the likelihood models' step (Adam on a loss, with
DistributedDataParallel under torchrun).

Batch ``t`` is drawn from a generator seeded by a hash of ``(seed, t)`` (``step_generator``), so a
resumed run (weights, training and RNG states restored from the checkpoint) continues exactly as
the uninterrupted one would, and under ``torchrun`` each rank takes its slice of the same global
batch.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm import tqdm

from pygen.train.checkpoint import (
    LATEST,
    atomic_write_text,
    load_checkpoint,
    load_weights,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pygen.utils.random import derived_seed

ModelT = TypeVar("ModelT", bound=nn.Module)
LossFn = Callable[[ModelT, Tensor, Tensor | None], Tensor]  # loss_fn(model, x, y)


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (stored in each checkpoint's sidecar).

    Attributes:
        steps: the step the run ends at (a resumed run continues up to it); >= 0.
        batch_size: examples of a step's global batch (under torchrun split evenly over the
            ranks, so divisible by their number; a recipe with several critic steps per
            generator step draws one such batch for each); >= 1.
        lr: Adam's learning rate, of every optimizer of the run (the adversarial recipes give it
            to both players); > 0.
        seed: seeds step ``t``'s batch (``step_generator``: a hash of ``(seed, t)``) and torch's
            global generators (``rank_seed``); a resumed run keeps the stored run's.
        checkpoint_every: a checkpoint every this many steps besides the one at the end; 0:
            only at the end.
        keep_checkpoints: how many of the newest checkpoints to keep, deleting the older ones;
            0: keep all.
        log_every: a row of metrics in ``metrics.jsonl`` every this many steps (and at the last
            step); >= 1.
        grad_clip: clip the gradients' total norm to this before each update (> 0; ``LossSteps``,
            the likelihood models); None: no clipping.
    """

    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    checkpoint_every: int = 0  # 0: only at the end
    keep_checkpoints: int = 0  # the newest ones kept; 0: all
    log_every: int = 10
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        # Config files hold any type: a clear error here, not a failure deep in the loop.
        numbers = ("steps", "batch_size", "lr", "seed", "checkpoint_every", "keep_checkpoints")
        for name in (*numbers, "log_every"):
            value = getattr(self, name)
            number = (int, float) if name == "lr" else int
            if isinstance(value, bool) or not isinstance(value, number):
                hint = " (YAML reads 1e-3 as text: write 1.0e-3)" if isinstance(value, str) else ""
                raise TypeError(f"train.{name} must be a number, got {value!r}{hint}")
        if self.steps < 0 or self.batch_size < 1 or self.lr <= 0 or self.log_every < 1:
            raise ValueError(
                "train needs steps >= 0, batch_size >= 1, lr > 0 and log_every >= 1, got "
                f"{self.steps}, {self.batch_size}, {self.lr} and {self.log_every}"
            )
        for name in ("checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.grad_clip is not None:
            # clip_grad_norm_ takes any float: a negative bound would flip every gradient.
            if isinstance(self.grad_clip, bool) or not isinstance(self.grad_clip, (int, float)):
                raise TypeError(f"train.grad_clip must be a number or null, got {self.grad_clip!r}")
            if not self.grad_clip > 0:
                raise ValueError(f"train.grad_clip must be > 0, got {self.grad_clip}")


class TrainingSteps(Protocol):
    """What the shared loop drives, one step at a time.

    ``step(gen)`` trains on the batch it draws from ``gen`` (a CPU generator seeded by the run's
    seed and the step number, ``step_generator``) and returns the step's metrics, ``loss``
    among them, as numbers or 0-d tensors (read only when logged, so a GPU step need not wait
    for the host). ``state_dict`` / ``load_state_dict`` cover what a resumed run needs besides
    the model's weights: optimizers, loss scalers, moving averages, image pools. ``set_lr(lr)``
    sets the learning rate of its optimizers; the loop calls it only when a resumed run is given
    a learning rate other than the stored run's. An optional attribute ``batches_per_step`` (1 if
    absent) counts the batches of ``batch_size`` a step draws, for the logged examples/s.
    """

    def step(self, gen: torch.Generator) -> Mapping[str, Tensor | float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def set_lr(self, lr: float) -> None: ...


class _Objective(nn.Module, Generic[ModelT]):
    """The loss as a module's forward, so that DistributedDataParallel wraps any objective
    (one calling model methods such as ``loss`` or ``log_prob``, not only ``forward``)."""

    def __init__(self, model: ModelT, loss_fn: LossFn[ModelT]) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, x: Tensor, y: Tensor | None) -> Tensor:
        return self.loss_fn(self.model, x, y)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU generator of step ``step``'s batch: seeded by (seed, step), so a resumed run
    draws the batches the uninterrupted one would have drawn."""
    return torch.Generator().manual_seed(derived_seed(seed, "batch", step))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of torch's generators on rank ``rank`` of a run seeded with ``seed``: the run's
    own on rank 0 (a one-process run), another on each other rank, so that the ranks' noise
    (dequantization, reparameterization) is independent across the global batch."""
    return seed if rank == 0 else derived_seed(seed, "rank", rank)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group of ``optimizer`` (a loaded optimizer state
    brings the stored run's)."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def draw_indices(n: int, batch_size: int, gen: torch.Generator) -> Tensor:
    """``batch_size`` indices in ``[0, n)`` from ``gen``, without replacement when the batch fits
    the data."""
    if batch_size <= n:
        return torch.randperm(n, generator=gen)[:batch_size]
    return torch.randint(n, (batch_size,), generator=gen)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> Tensor:
    """The global batch of step ``step`` of a run seeded with ``seed``."""
    return draw_indices(n, batch_size, step_generator(seed, step))


class LossSteps(Generic[ModelT]):
    """The likelihood models' step: Adam on ``loss_fn(model, x, y)`` (a mean over examples) over
    the step's batch of ``data`` and ``labels``, gradients clipped when the config says so.
    Under torchrun, each rank takes its slice of the same global batch and DistributedDataParallel
    averages the gradients; the loss returned is the global batch's."""

    def __init__(
        self,
        model: ModelT,
        loss_fn: LossFn[ModelT],
        data: Tensor,
        labels: Tensor | None,
        config: TrainConfig,
    ) -> None:
        self.rank, self.world_size = world()
        if config.batch_size % self.world_size:
            raise ValueError(
                f"batch_size {config.batch_size} must divide by the {self.world_size} ranks"
            )
        if len(data) == 0:
            raise ValueError("no training data")
        self.model, self.data, self.labels, self.config = model, data, labels, config
        self.local = config.batch_size // self.world_size
        self.device = next(model.parameters()).device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        self.objective: nn.Module = _Objective(model, loss_fn)
        if self.world_size > 1:
            self.objective = nn.parallel.DistributedDataParallel(self.objective)

    def step(self, gen: torch.Generator) -> dict[str, Tensor]:
        idx = draw_indices(len(self.data), self.config.batch_size, gen)
        idx = idx[self.rank * self.local : (self.rank + 1) * self.local]
        x = self.data[idx].to(self.device)
        y = self.labels[idx].to(self.device) if self.labels is not None else None
        loss = self.objective(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        loss = loss.detach().clone()
        if self.world_size > 1:  # the global batch's loss, not this rank's slice of it
            dist.all_reduce(loss)
            loss /= self.world_size
        return {"loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)

    def set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)


def _read_metrics(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill mid-write
            continue
    return [r for r in rows if r["step"] <= up_to_step]


def save_curves(metrics: list[dict], path: Path) -> Path | None:
    """PNG of the loss curve (matplotlib, headless)."""
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([m["step"] for m in metrics], [m["loss"] for m in metrics])
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def train(
    model: ModelT,
    loss_fn: LossFn[ModelT],
    data: Tensor,
    labels: Tensor | None,
    config: TrainConfig,
    out_dir: str | Path,
    **options: Any,
) -> list[dict]:
    """Train ``model`` on ``data`` by minimizing ``loss_fn(model, x, y)`` (a mean over examples):
    ``train_steps`` (which takes ``options``: ``model_name``, ``model_config``, ``resume``, ...)
    with ``LossSteps``. Returns the metrics."""
    steps = LossSteps(model, loss_fn, data, labels, config)
    return train_steps(steps, model, config, out_dir, **options)


def train_steps(
    steps: TrainingSteps,
    model: nn.Module,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    model_name: str,
    model_config: dict[str, Any],
    resume: bool = False,
    progress: bool = True,
    hooks: Sequence[tuple[int, Callable[[int], None]]] = (),
    extra: dict[str, Any] | None = None,
) -> list[dict]:
    """Run ``steps`` (training ``model``) up to ``config.steps``.

    Writes ``out_dir/metrics.jsonl`` (every ``config.log_every`` steps: the step's metrics and
    examples/s), ``out_dir/curves.png`` and checkpoints under ``out_dir/checkpoints`` (every
    ``config.checkpoint_every`` steps and at the end; rank 0 only); with ``resume=True``
    continues from the latest one (weights, training state, RNG states and its seed), bit for
    bit as the uninterrupted run (a ``config.lr`` other than the stored run's takes effect).
    ``hooks`` are ``(every, fn)`` pairs: rank 0 calls ``fn(step)`` after every ``every``-th step
    (sample grids, evaluations). ``extra``: more to record in each checkpoint's sidecar (the CLI:
    the data it trained on). Returns the metrics.
    """
    rank, world_size = world()
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    metrics_path = out_dir / "metrics.jsonl"
    start = 0
    if resume and (ckpt_dir / LATEST).is_file():
        # A checkpoint was written: an unreadable one is an error (starting over would overwrite
        # the run); with none yet, the run is the one without resume.
        ckpt = load_checkpoint(ckpt_dir)
        load_weights(model, ckpt)
        if ckpt.training_state is not None:
            steps.load_state_dict(ckpt.training_state)
            # The loaded optimizers run at the stored run's learning rate; a new one given for
            # the remaining steps wins (and is the one this run's checkpoints record).
            stored_lr = ckpt.extra.get("train", {}).get("lr")
            if stored_lr is not None and config.lr != stored_lr:
                steps.set_lr(config.lr)
        if ckpt.rng_state is not None:
            states = ckpt.rng_state if isinstance(ckpt.rng_state, list) else [ckpt.rng_state]
            if rank < len(states):
                set_rng_state(states[rank])
            else:  # more ranks than the stored run had: a stream of this rank's own
                torch.manual_seed(derived_seed(config.seed, "rank", rank, "resumed", ckpt.step))
        # The batches of the remaining steps follow the stored run's seed, not a new one.
        config = replace(config, seed=ckpt.extra.get("train", {}).get("seed", config.seed))
        start = ckpt.step
        if start >= config.steps and rank == 0:
            message = (
                f"{ckpt_dir}: already at step {start} (steps={config.steps}), nothing to train"
            )
            print(message, file=sys.stderr)
    else:
        torch.manual_seed(rank_seed(config.seed, rank))
    metrics = _read_metrics(metrics_path, start) if rank == 0 else []
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(metrics_path, "".join(json.dumps(m) + "\n" for m in metrics))

    def checkpoint(step: int) -> None:
        states: list[Any] | None = None  # every rank's rng_state()
        if world_size > 1:  # every rank's generators: each draws its own noise on resume
            states = [None] * world_size
            dist.all_gather_object(states, rng_state())
        if rank == 0:
            save_checkpoint(
                ckpt_dir,
                model,
                model_name=model_name,
                config=model_config,
                step=step,
                training_state=steps.state_dict(),
                extra={"train": asdict(config), **(extra or {})},
                keep=config.keep_checkpoints,
                rng_states=states,
            )

    bar = tqdm(
        range(start, config.steps),
        initial=start,
        total=config.steps,
        disable=not progress or rank != 0,
        desc=model_name,
        dynamic_ncols=True,
    )
    tic, seen = time.perf_counter(), 0
    examples_per_step = config.batch_size * getattr(steps, "batches_per_step", 1)
    model.train()
    for step in bar:
        values = steps.step(step_generator(config.seed, step))
        seen += examples_per_step
        done = step + 1
        if rank == 0 and (done % config.log_every == 0 or done == config.steps):
            elapsed = time.perf_counter() - tic
            row = {"step": done, **{k: float(v) for k, v in values.items()}}
            row["examples_per_s"] = seen / elapsed
            metrics.append(row)
            with metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            bar.set_postfix(loss=f"{row['loss']:.4f}", ex_s=f"{row['examples_per_s']:.0f}")
            tic, seen = time.perf_counter(), 0
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            checkpoint(done)
        for every, fn in hooks:
            if rank == 0 and done % every == 0:
                fn(done)
                model.train()
    if start < config.steps or not (ckpt_dir / "latest").exists():
        checkpoint(config.steps)
    if rank == 0:
        save_curves(metrics, out_dir / "curves.png")
    model.eval()
    return metrics
