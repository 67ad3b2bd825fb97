"""Checkpoints: safetensors weights, a JSON sidecar (model name and config, step, the trainer's
extra fields; metrics live in the run's metrics.jsonl), the
training state (optimizers and whatever else the trainer keeps) and every RNG state, written
atomically.

A checkpoint is a folder ``<root>/step-<N>/`` holding ``model.safetensors``, ``checkpoint.json``,
``training.pt`` and ``rng.pt``. It is written under a temporary name and renamed into place, and
``<root>/latest`` (a one-line file naming the newest folder) is replaced with an atomic rename
last, so a crash at any moment leaves the previous checkpoint intact and ``latest`` pointing at a
complete one. A re-save of a step renames the finished new folder to a hidden ``.new-`` name,
renames the old folder aside (never deleting it in place) and then renames the new one in:
readers find the old folder or the new one, never one half deleted. A kill between the last two
renames leaves no ``step-<N>`` folder: loads then read the ``.new-`` copy (else the set-aside
old one), and the next save renames it back into place. What else a killed save leaves (hidden
``.step-*`` and ``.latest.*`` names) goes at the next save. Every file and folder is flushed to
the disk (fsync) before the rename that publishes it, so a power cut, not only a killed process,
cannot leave ``latest`` naming a folder whose files are lost. Folders and files get the
permissions the umask gives.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
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
    # One process's generator states, or (a distributed run) every rank's, in rank order.
    rng_state: dict[str, Any] | list[dict[str, Any]] | None = None
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


def _hidden_name(path: Path, tag: str) -> Path:
    """A fresh hidden name next to ``path``: ``.<name>.<tag>-<random>``."""
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}")


def _sync(path: Path) -> None:
    """Flush ``path``, a file or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename: a crash leaves the old file or the new one."""
    tmp = _hidden_name(path, "tmp")
    # Not mkstemp, whose 0600 the file would keep: 0666 less the umask, as open() gives.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync(path.parent)  # the rename itself


def _stranded_copy(final: Path) -> Path | None:
    """The complete copy of the missing step folder ``final`` that a re-save killed between its
    renames left under a hidden name: the new folder if it got its ``.new-`` name (written whole),
    else the old one set aside (a complete checkpoint until then). None while ``final`` exists."""
    if final.exists():
        return None
    for tag in ("new", "old"):
        copies = sorted(final.parent.glob(f".{final.name}.{tag}-*"))
        if copies:
            return copies[0]
    return None


def _recover_stranded(root: Path) -> None:
    """Rename back into place every step folder that a kill mid re-save left only as a hidden
    copy (writers only: a reader reads the copy where it lies, racing no save in progress)."""
    # ".step-00000001.new-<hex>" -> "step-00000001"; names without a tag part match no copy.
    finals = {root / p.name[1:].rsplit(".", 1)[0] for p in root.glob(".step-*.*")}
    for final in finals:
        copy = _stranded_copy(final)
        if copy is not None:
            os.replace(copy, final)


def _remove_stale(root: Path) -> None:
    """Delete what a killed save left in ``root``: temporary and set-aside folders and files. A
    root has one writer (rank 0 of one run), so none of them belongs to a save in progress."""
    for path in root.iterdir():
        if path.name.startswith((".step-", f".{LATEST}.")):
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()


def _put_in_place(tmp: Path, final: Path) -> None:
    """Rename the complete folder ``tmp`` to ``final``. A ``final`` already there (a re-save of
    its step) is renamed aside, not deleted in place, so no reader finds it half removed; it goes
    back if the rename fails. Before that, ``tmp`` takes a ``.new-`` name: the mark of a copy
    written whole, which a kill between the two swap renames leaves for recovery."""
    if not final.exists():
        os.replace(tmp, final)
        return
    new, old = _hidden_name(final, "new"), _hidden_name(final, "old")
    os.replace(tmp, new)
    try:
        os.replace(final, old)
        try:
            os.replace(new, final)
        except BaseException:
            os.replace(old, final)
            raise
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)  # a failed save leaves the old folder only
        raise
    shutil.rmtree(old, ignore_errors=True)  # the save is done; a leftover goes at the next one


def save_checkpoint(
    root: str | os.PathLike,
    model: nn.Module,
    *,
    model_name: str,
    config: dict[str, Any],
    step: int,
    training_state: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    keep: int = 0,
    rng_states: list[dict[str, Any]] | None = None,
) -> Path:
    """Write ``root/step-<step>/`` atomically and point ``root/latest`` at it; return its path.
    ``training_state``: what a resumed run restores besides the weights (a trainer's
    ``state_dict()``: optimizers, loss scalers, ...). ``keep > 0``: then delete all but the
    ``keep`` newest step folders (this one among them). ``rng_states``: every rank's generator
    states (a distributed run), else this process's are saved."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _recover_stranded(root)
    _remove_stale(root)
    final = root / f"step-{step:08d}"
    tmp = _hidden_name(final, "tmp")
    tmp.mkdir()  # not mkdtemp, whose 0700 the checkpoint would keep: the umask decides
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        safetensors.torch.save_file(state, tmp / WEIGHTS)
        # safetensors writes 0600: the folder's permissions (0777 less the umask) less execute.
        os.chmod(tmp / WEIGHTS, tmp.stat().st_mode & 0o666)
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
        torch.save(rng_states if rng_states is not None else rng_state(), tmp / RNG)
        for path in [*tmp.iterdir(), tmp]:
            _sync(path)
        _put_in_place(tmp, final)
        _sync(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    atomic_write_text(root / LATEST, final.name + "\n")
    if keep > 0:
        older = sorted((p for p in root.glob("step-*") if p != final), key=_step_of)
        for path in older[: max(len(older) - (keep - 1), 0)]:
            shutil.rmtree(path)  # after `latest` moved on: no reader is sent to it any more
    return final


def _step_of(path: Path) -> int:
    """The step of a ``step-<N>`` folder (-1 for a name that is not one: deleted first)."""
    digits = path.name.removeprefix("step-")
    return int(digits) if digits.isdigit() else -1


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder from itself or from its root (through ``latest``); for a step folder
    that a kill mid re-save left missing, its stranded copy (see the module docstring)."""
    path = Path(path)
    path = _stranded_copy(path) or path
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if (path / LATEST).is_file():
        name = (path / LATEST).read_text().strip()
        path = path / name
        path = _stranded_copy(path) or path
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


def load_checkpoint(path: str | os.PathLike, training: bool = True) -> Checkpoint:
    """Read a checkpoint folder (or the latest one under a root); errors name the bad file.
    ``training=False`` reads the model alone (sidecar and safetensors weights), not the training
    and RNG states, which are pickles (``torch.load``) and only a resumed run needs."""
    path = resolve(path)
    sidecar = load_sidecar(path)
    try:
        state_dict = safetensors.torch.load_file(path / WEIGHTS)
    except Exception as err:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path / WEIGHTS}: unreadable weights ({err})") from err

    def optional(name: str):
        if not training or not (path / name).exists():
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
