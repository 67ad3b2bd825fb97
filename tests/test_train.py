"""The training loop, checkpoints (atomic, resumable bit for bit) and distributed training."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_two_ranks
from torch import nn

from pygen.layers import ActNorm
from pygen.train import (
    CheckpointError,
    TrainConfig,
    batch_indices,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    train,
    train_steps,
)
from pygen.train import checkpoint as checkpoint_module
from pygen.train import loop as loop_module


class TinyDensity(nn.Module):
    """A Gaussian over flattened, jittered 8x8 digits whose mean and scale come from a small net
    with dropout: dropout and jitter draw from the global RNG, as real models do."""

    def __init__(self, dim: int = 64, jitter: float = 0.01, dropout: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, 32), nn.Dropout(dropout), nn.Linear(32, 2 * dim))
        self.prior = nn.Parameter(torch.zeros(dim))
        self.jitter = jitter

    def forward(self, x):
        x = x.flatten(1).float() / 16.0
        x = x + self.jitter * torch.randn_like(x)
        mean, log_std = self.net(self.prior.expand_as(x)).chunk(2, dim=-1)
        z = (x - mean) * torch.exp(-log_std)
        return (0.5 * z.square() + log_std).sum(-1)


def gaussian_loss(model, x, y):
    return model(x).mean()  # model is the bare module, also under DistributedDataParallel


def digits():
    from pygen.data import load_digits

    return load_digits("train")[0][:256]


def run(tmp_path, steps, *, resume=False, checkpoint_every=0, seed=0, lr=1e-2, keep=0):
    torch.manual_seed(seed)
    model = TinyDensity()
    config = TrainConfig(
        steps=steps,
        batch_size=32,
        lr=lr,
        seed=seed,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep,
        log_every=5,
    )
    metrics = train(
        model,
        gaussian_loss,
        digits(),
        None,
        config,
        tmp_path,
        model_name="tiny",
        model_config={"dim": 64},
        resume=resume,
        progress=False,
    )
    return model, metrics


def test_training_lowers_the_loss_and_writes_its_files(tmp_path):
    _, metrics = run(tmp_path, 60)
    assert metrics[-1]["loss"] < metrics[0]["loss"] - 10.0
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(5, 61, 5))
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ckpt = load_checkpoint(tmp_path / "checkpoints")
    assert ckpt.step == 60 and ckpt.model_name == "tiny" and ckpt.config == {"dim": 64}
    assert ckpt.extra["train"]["batch_size"] == 32


def test_resume_is_bit_for_bit_equal_to_an_uninterrupted_run(tmp_path):
    straight, _ = run(tmp_path / "straight", 40)
    run(tmp_path / "resumed", 20, checkpoint_every=10)
    resumed, metrics = run(tmp_path / "resumed", 40, resume=True, seed=123)  # stored seed wins
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert [m["step"] for m in metrics] == list(range(5, 41, 5))


def test_only_the_newest_checkpoints_are_kept_when_asked(tmp_path):
    straight, _ = run(tmp_path / "straight", 40)
    run(tmp_path / "kept", 30, checkpoint_every=5, keep=2)
    folders = sorted(p.name for p in (tmp_path / "kept" / "checkpoints").glob("step-*"))
    assert folders == ["step-00000025", "step-00000030"]
    resumed, _ = run(tmp_path / "kept", 40, checkpoint_every=5, keep=2, resume=True)
    folders = sorted(p.name for p in (tmp_path / "kept" / "checkpoints").glob("step-*"))
    assert folders == ["step-00000035", "step-00000040"]
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    run(tmp_path / "all", 20, checkpoint_every=5)  # keep 0: every one
    assert len(list((tmp_path / "all" / "checkpoints").glob("step-*"))) == 4


def test_a_learning_rate_given_on_resume_takes_effect(tmp_path):
    run(tmp_path, 20)
    stored = load_checkpoint(tmp_path / "checkpoints").training_state
    assert [g["lr"] for g in stored["param_groups"]] == [1e-2]
    run(tmp_path, 30, resume=True, lr=1e-3)
    ckpt = load_checkpoint(tmp_path / "checkpoints")
    assert ckpt.step == 30 and ckpt.extra["train"]["lr"] == 1e-3
    assert [g["lr"] for g in ckpt.training_state["param_groups"]] == [1e-3]


def test_resume_with_nothing_written_is_the_run_without_resume(tmp_path):
    plain, _ = run(tmp_path / "plain", 20)
    resumed, _ = run(tmp_path / "resumed", 20, resume=True)
    for (name, a), b in zip(plain.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_resume_from_an_unreadable_checkpoint_fails_instead_of_starting_over(tmp_path):
    run(tmp_path, 20, checkpoint_every=10)
    latest = load_checkpoint(tmp_path / "checkpoints").path
    (latest / "model.safetensors").write_bytes(b"junk")
    metrics_before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        run(tmp_path, 30, resume=True)
    assert (tmp_path / "metrics.jsonl").read_text() == metrics_before  # the run left alone


def test_resume_skips_a_metrics_line_cut_short(tmp_path):
    run(tmp_path, 20, checkpoint_every=10)
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 25, "lo')  # a kill mid-write
    _, metrics = run(tmp_path, 30, resume=True)
    assert [m["step"] for m in metrics] == list(range(5, 31, 5))


def test_resume_reads_the_optimizer_file_of_older_checkpoints(tmp_path):
    straight, _ = run(tmp_path / "straight", 30)
    run(tmp_path / "old", 20)
    latest = load_checkpoint(tmp_path / "old" / "checkpoints").path
    (latest / "training.pt").rename(latest / "optimizer.pt")  # the name before trainer states
    resumed, _ = run(tmp_path / "old", 30, resume=True)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"lr": "1e-3"}, TypeError, "write 1.0e-3"),
        ({"steps": "3"}, TypeError, "train.steps must be a number"),
        ({"batch_size": 0}, ValueError, "batch_size >= 1"),
        ({"batch_size": -2}, ValueError, "batch_size >= 1"),
        ({"steps": -5}, ValueError, "steps >= 0"),
        ({"log_every": 0}, ValueError, "log_every >= 1"),
        ({"checkpoint_every": -1}, ValueError, "checkpoint_every"),
        ({"keep_checkpoints": -1}, ValueError, "keep_checkpoints must be >= 0"),
        ({"grad_clip": 0.0}, ValueError, "grad_clip must be > 0"),
        ({"grad_clip": "1"}, TypeError, "grad_clip must be a number or null"),
    ],
)
def test_bad_train_settings_raise(changes, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**changes)


def test_batches_are_seeded_per_step():
    a = batch_indices(100, 10, seed=1, step=7)
    assert torch.equal(a, batch_indices(100, 10, seed=1, step=7))
    assert not torch.equal(a, batch_indices(100, 10, seed=1, step=8))
    assert len(set(a.tolist())) == 10
    assert batch_indices(5, 12, seed=0, step=0).shape == (12,)


def test_a_runs_streams_have_distinct_seeds():
    # The old arithmetic seeds (seed * 1000003 + step, seed + 1000003 * rank) collided here.
    seeds = {
        loop_module.step_generator(0, 1_000_003).initial_seed(),
        loop_module.step_generator(1, 0).initial_seed(),
        loop_module.rank_seed(0, 1),
        loop_module.rank_seed(1_000_003, 0),
        loop_module.step_generator(0, 0).initial_seed(),
        loop_module.rank_seed(0, 0),
    }
    assert len(seeds) == 6
    assert loop_module.rank_seed(5, 0) == 5  # a one-process run seeds torch as asked
    # Resumed runs draw the stored run's batches: the seeds are fixed across processes and
    # versions, not Python's salted hash.
    assert loop_module.step_generator(0, 0).initial_seed() == 0x47FE2FDD79940A3B


def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = TinyDensity()
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.prior.add_(1.0)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("simulated crash while writing")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=2)
    ckpt = load_checkpoint(tmp_path)
    assert ckpt.step == 1
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in before.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]


def test_re_saving_a_step_replaces_it_whole_or_not_at_all(tmp_path, monkeypatch):
    model = TinyDensity()
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.prior.add_(1.0)
    replace, crashed = os.replace, []

    def crash_moving_the_new_folder_in(src, dst):
        if Path(dst).name == "step-00000001" and Path(src).name.startswith(".") and not crashed:
            crashed.append(src)
            raise KeyboardInterrupt("simulated crash while re-saving")
        replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_moving_the_new_folder_in)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1)
    ckpt = load_checkpoint(tmp_path)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in before.items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]
    monkeypatch.undo()
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1)
    ckpt = load_checkpoint(tmp_path)
    assert all(torch.equal(ckpt.state_dict[k], v) for k, v in model.state_dict().items())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step-00000001"]


def kill_between_the_swap_renames(monkeypatch) -> None:
    """Make ``os.replace`` act as a kill right after a re-save renamed the old step folder aside:
    every later call fails and ``shutil.rmtree`` does nothing, so the handlers that run on the
    way out rename and delete nothing, as after a real kill."""
    replace, rmtree, killed = os.replace, shutil.rmtree, []

    def replace_until_killed(src, dst):
        if killed:
            raise SystemExit("simulated kill")
        replace(src, dst)
        if Path(src).name.startswith("step-"):
            killed.append(src)

    def rmtree_until_killed(path, *args, **kwargs):
        if not killed:
            rmtree(path, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.os, "replace", replace_until_killed)
    monkeypatch.setattr(checkpoint_module.shutil, "rmtree", rmtree_until_killed)


def test_a_kill_mid_re_save_recovers_the_new_step_folder(tmp_path, monkeypatch):
    # The kill left the step only as hidden copies: the load failed ("named by 'latest' but
    # missing") and the next save deleted both copies as leftovers.
    model = TinyDensity()
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1)
    with torch.no_grad():
        model.prior.add_(1.0)
    new = {k: v.clone() for k, v in model.state_dict().items()}
    kill_between_the_swap_renames(monkeypatch)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1, extra={"v": 2})
    monkeypatch.undo()
    assert not (tmp_path / "step-00000001").exists()
    for path in (tmp_path, tmp_path / "step-00000001"):
        ckpt = load_checkpoint(path)
        assert ckpt.step == 1 and ckpt.extra == {"v": 2} and ckpt.rng_state is not None
        assert all(torch.equal(ckpt.state_dict[k], v) for k, v in new.items())
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest",
        "step-00000001",
        "step-00000002",
    ]
    assert load_checkpoint(tmp_path / "step-00000001").extra == {"v": 2}


def test_a_kill_mid_re_save_without_the_new_copy_recovers_the_old_one(tmp_path, monkeypatch):
    # What the kill left before re-saves marked the new copy complete: the old folder set aside
    # and the new one under its temporary name, which may be partial (not recovered).
    model = TinyDensity()
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1, extra={"v": 1})
    kill_between_the_swap_renames(monkeypatch)
    with pytest.raises(SystemExit):
        save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1, extra={"v": 2})
    monkeypatch.undo()
    for copy in tmp_path.glob(".step-00000001.new-*"):
        copy.rename(tmp_path / ".step-00000001.tmp-partial")
    assert len(list(tmp_path.glob(".step-00000001.tmp-*"))) == 1
    assert load_checkpoint(tmp_path).extra == {"v": 1}
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest",
        "step-00000001",
        "step-00000002",
    ]
    assert load_checkpoint(tmp_path / "step-00000001").extra == {"v": 1}


def test_a_save_removes_what_a_killed_save_left(tmp_path):
    model = TinyDensity()
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=1)
    for name in (".step-00000002.tmp-dead", ".step-00000001.old-dead", ".step-00000003.x1y2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".latest.tmp-dead").write_text("step-00000002\n")
    save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "latest",
        "step-00000001",
        "step-00000002",
    ]


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="names fsync'd files by /proc")
def test_a_checkpoint_reaches_the_disk_before_latest_names_it(tmp_path, monkeypatch):
    # A power cut (not only a kill) must not leave `latest` naming a folder whose files are lost:
    # every file, the folder and the root are flushed before and after the renames.
    synced, real_fsync = [], os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(checkpoint_module.os, "fsync", fsync)
    path = save_checkpoint(
        tmp_path, TinyDensity(), model_name="tiny", config={}, step=1, training_state={}
    )
    names = [Path(p).name for p in synced]
    for name in ("model.safetensors", "checkpoint.json", "training.pt", "rng.pt"):
        assert name in names
    assert any(n.startswith(".step-00000001.tmp-") for n in names)  # the folder, before its rename
    assert names.count(tmp_path.name) >= 2  # the root after the folder's rename and latest's
    assert any(n.startswith(".latest.tmp-") for n in names) and path.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_checkpoints_get_the_permissions_of_the_umask(tmp_path):
    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path, TinyDensity(), model_name="tiny", config={}, step=1)
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    for file in (path / "checkpoint.json", path / "model.safetensors", tmp_path / "latest"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o644, file.name


def test_corrupt_or_mismatched_checkpoints_name_the_file(tmp_path):
    model = TinyDensity()
    path = save_checkpoint(tmp_path, model, model_name="tiny", config={}, step=3)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_weights(nn.Linear(2, 2), load_checkpoint(path))
    (path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(path)
    (path / "checkpoint.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"checkpoint\.json"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing")


def group_threads(wait_s: float = 5.0) -> list[str]:
    """The names of this process's gloo and c10d store threads (Linux; [] elsewhere), waiting up
    to ``wait_s`` for exiting ones to leave /proc."""
    tasks = Path("/proc/self/task")
    deadline = time.monotonic() + wait_s
    while True:
        names = []
        for task in tasks.glob("*") if tasks.is_dir() else []:
            try:
                names.append((task / "comm").read_text().strip())
            except FileNotFoundError:  # a thread that ended meanwhile
                continue
        left = [n for n in names if "gloo" in n or "tcpstore" in n]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


DDP_WORKER = r"""
import os, sys, torch, torch.distributed as dist
sys.path[:0] = [sys.argv[3], os.path.join(sys.argv[3], "tests")]  # the repo and conftest
from tests.test_train import TinyDensity, gaussian_loss, digits, group_threads
from pygen.cli import init_distributed
from pygen.train import TrainConfig, train
init_distributed(torch.device("cpu"))  # as `pygen train` joins the group torchrun describes
try:
    torch.manual_seed(0)
    # No RNG: ranks would draw other numbers than one process.
    model = TinyDensity(jitter=0.0, dropout=0.0)
    config = TrainConfig(steps=15, batch_size=32, lr=1e-2, seed=0, log_every=5)
    train(model, gaussian_loss, digits(), None, config, sys.argv[1], model_name="tiny",
          model_config={}, progress=False)
    rank = dist.get_rank()
    draw = torch.rand(3)  # each rank's own stream: independent noise across the global batch
    # ActNorm starts from the global batch's statistics: each rank sees half of it.
    from pygen.layers import ActNorm
    act = ActNorm(2)
    act(torch.arange(8.0).view(4, 2)[2 * rank : 2 * rank + 2] ** 2)
    result = {"state": model.state_dict(), "draw": draw, "actnorm": act.state_dict()}
    torch.save(result, f"{sys.argv[2]}.{rank}")
finally:
    dist.destroy_process_group()
# The group's threads end with it, not in the interpreter's shutdown (where tearing them down
# can abort the process: "terminate called without an active exception").
left = group_threads()
assert not left, f"threads alive after destroy_process_group: {left}"
"""


def test_two_process_gloo_training_equals_one_process(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    run_two_ranks(
        [sys.executable, str(script), str(tmp_path / "ddp"), str(tmp_path / "w.pt"), root]
    )
    torch.manual_seed(0)
    single = TinyDensity(jitter=0.0, dropout=0.0)
    config = TrainConfig(steps=15, batch_size=32, lr=1e-2, seed=0, log_every=5)
    train(
        single,
        gaussian_loss,
        digits(),
        None,
        config,
        tmp_path / "single",
        model_name="tiny",
        model_config={},
        progress=False,
    )
    ranks = [torch.load(f"{tmp_path / 'w.pt'}.{rank}") for rank in range(2)]
    for name, value in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-5, atol=1e-6, msg=name)

    # The logged loss is the global batch's, as one process logs it.
    def losses(run):
        return [
            json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
        ]

    torch.testing.assert_close(
        losses(tmp_path / "ddp"), losses(tmp_path / "single"), rtol=1e-5, atol=0
    )
    assert not torch.equal(ranks[0]["draw"], ranks[1]["draw"])
    stored = torch.load(
        tmp_path / "ddp" / "checkpoints" / "step-00000015" / "rng.pt", weights_only=False
    )
    assert isinstance(stored, list) and len(stored) == 2  # each rank's generators
    whole = ActNorm(2)
    whole(torch.arange(8.0).view(4, 2) ** 2)
    for rank in ranks:
        for name, value in whole.state_dict().items():
            torch.testing.assert_close(rank["actnorm"][name], value, msg=name)


class CountedSteps:
    """A TrainingSteps that draws ``batches_per_step`` batches a step (a GAN's critic steps)."""

    batches_per_step = 3

    def step(self, gen: torch.Generator) -> dict[str, float]:
        return {"loss": 0.0}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def set_lr(self, lr: float) -> None:
        pass


def test_examples_per_second_counts_every_batch_a_step_draws(tmp_path, monkeypatch):
    clock = iter(range(1000))  # one second per reading
    monkeypatch.setattr(loop_module.time, "perf_counter", lambda: float(next(clock)))
    config = TrainConfig(steps=4, batch_size=8, log_every=2)
    rows = train_steps(
        CountedSteps(), TinyDensity(), config, tmp_path, model_name="tiny", model_config={}
    )
    assert [row["examples_per_s"] for row in rows] == [2 * 3 * 8 / 1.0] * 2
