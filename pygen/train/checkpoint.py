"""Checkpoints: safetensors weights, a JSON sidecar (model name and config, step, metrics), the
training state (optimizers and whatever else the trainer keeps) and every RNG state, written
atomically.

A checkpoint is a folder ``<root>/step-<N>/`` holding ``model.safetensors``, ``checkpoint.json``,
``training.pt`` and ``rng.pt``. It is written under a temporary name and renamed into place, and
``<root>/latest`` (a one-line file naming the newest folder) is replaced with an atomic rename
last, so a crash at any moment leaves the previous checkpoint intact and ``latest`` pointing at a
complete one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

WEIGHTS, SIDECAR, TRAINING, RNG, LATEST = (
    "model.safetensors",
    "checkpoint.json",
    "training.pt",
    "rng.pt",
    "latest",
)
OLD_TRAINING = "optimizer.pt"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not match the model; names the file."""


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, loaded (weights as a state dict)."""

    path: Path
    model_name: str
    config: dict[str, Any]
    step: int
    state_dict: dict[str, torch.Tensor]
    training_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and CUDA) generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 (the legacy global generator is what user code seeds)
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: a crash leaves the old file or the new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_checkpoint(
    root: str | os.PathLike,
    model: nn.Module,
    *,
    model_name: str,
    config: dict[str, Any],
    step: int,
    training_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``root/step-<step>/`` atomically and point ``root/latest`` at it; return its path.
    ``training_state``: what a resumed run restores besides the weights (a trainer's
    ``state_dict()``: optimizers, loss scalers, ...)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}."))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, tmp / WEIGHTS)
        sidecar = {
            "format": FORMAT_VERSION,
            "model": model_name,
            "config": config,
            "step": step,
            "extra": extra or {},
        }
        (tmp / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n")
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING)
        torch.save(rng_state(), tmp / RNG)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, final.name + "\n")
    return final


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder from itself or from its root (through ``latest``)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if (path / LATEST).is_file():
        name = (path / LATEST).read_text().strip()
        path = path / name
        if not path.is_dir():
            raise CheckpointError(f"{path}: named by 'latest' but missing")
    if not (path / SIDECAR).is_file():
        raise CheckpointError(f"{path / SIDECAR}: missing (not a pygen checkpoint)")
    return path


def load_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON sidecar of a checkpoint folder (or of the latest one under a root), weights left
    unread: ``model``, ``config``, ``step`` and ``extra``. Errors name the file."""
    path = resolve(path)
    try:
        sidecar = json.loads((path / SIDECAR).read_text())
        # Required: the model's name and config and the step (a number).
        required = {"model": sidecar["model"], "config": sidecar["config"]}
        sidecar = {**sidecar, **required, "step": int(sidecar["step"])}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path / SIDECAR}: unreadable sidecar ({err})") from err
    if sidecar.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path / SIDECAR}: unknown format {sidecar.get('format')!r}")
    return sidecar


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint folder (or the latest one under a root); errors name the bad file."""
    path = resolve(path)
    sidecar = load_sidecar(path)
    try:
        state_dict = safetensors.torch.load_file(path / WEIGHTS)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path / WEIGHTS}: unreadable weights ({err})") from err

    def optional(name: str):
        if not (path / name).exists():
            return None
        try:
            return torch.load(path / name, weights_only=False)
        except Exception as err:
            raise CheckpointError(f"{path / name}: unreadable ({err})") from err

    return Checkpoint(
        path=path,
        model_name=sidecar["model"],
        config=sidecar["config"],
        step=sidecar["step"],
        state_dict=state_dict,
        # Checkpoints written before the trainers' states held their optimizer's as optimizer.pt.
        training_state=optional(TRAINING) if (path / TRAINING).exists() else optional(OLD_TRAINING),
        rng_state=optional(RNG),
        extra=sidecar.get("extra", {}),
    )


def load_weights(model: nn.Module, checkpoint: Checkpoint) -> None:
    """Load the checkpoint's weights into model; a mismatch names the checkpoint file."""
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as err:
        raise CheckpointError(
            f"{checkpoint.path / WEIGHTS}: does not match the model ({err})"
        ) from err
