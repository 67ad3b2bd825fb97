"""The pygen command: ``pygen {train,sample,eval,bench,demo,info}`` (also ``python -m pygen``).

Runs under ``torchrun --nproc_per_node=K -m pygen train ...`` with DistributedDataParallel (NCCL
on GPUs, gloo on CPU); ``sample`` then shards the images across the ranks.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from pygen._extension import build_info
from pygen.data import absolute_spec
from pygen.recipes import RECIPES, SampleOptions, build_model, get_recipe
from pygen.train import (
    LossSteps,
    TrainConfig,
    load_checkpoint,
    load_sidecar,
    load_weights,
    train_steps,
)
from pygen.train.checkpoint import LATEST, CheckpointError
from pygen.train.loop import world
from pygen.utils.random import derived_seed


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        error = argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        try:
            value = int(text)
        except ValueError:
            raise error from None
        if value < minimum:
            raise error
        return value

    return parse


_positive_int = _int_at_least(1)


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _read_config(path: str | None) -> dict[str, Any]:
    """A YAML or JSON file of options: ``model: {...}`` and ``train: {...}`` sections."""
    if path is None:
        return {}
    text = Path(path).read_text()
    if path.lower().endswith((".yaml", ".yml")):
        import yaml

        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err})") from err
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
    sections_ok = isinstance(loaded, dict) and all(isinstance(v, dict) for v in loaded.values())
    if not sections_ok or set(loaded) - {"model", "train"}:
        raise ValueError(
            f"{path}: expected a mapping with 'model' and/or 'train' sections, each a mapping"
        )
    return loaded


def init_distributed(device: torch.device) -> None:
    """Join the process group torchrun describes (WORLD_SIZE > 1); no-op otherwise. Whoever
    calls it destroys the group on every exit path (``main`` does)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        # DistributedDataParallel imports torch._dynamo. First imported after the group exists,
        # it keeps the group alive past destroy_process_group (measured, torch 2.14: gloo's
        # worker and transport threads, rank 0's store server), to be torn down while the
        # interpreter shuts down, which can abort the process ("terminate called without an
        # active exception"). Imported before, the group goes with destroy_process_group.
        importlib.import_module("torch._dynamo")
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)


def _mapped_libstdcxx() -> str | None:
    """The libstdc++ file this process mapped (Linux): the C++ runtime torch runs on (pygen._C
    carries its own hidden copy when built with GCC), which a crash report inside it needs."""
    maps = Path("/proc/self/maps")
    if not maps.exists():
        return None
    for line in maps.read_text().splitlines():
        if "libstdc++" in line:
            return line.split()[-1]
    return None


def cmd_info(args: argparse.Namespace) -> int:
    info = {
        "pygen": build_info(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "libstdcxx": _mapped_libstdcxx(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "models": sorted(RECIPES),
    }
    print(json.dumps(info, indent=1))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    recipe = get_recipe(args.model)
    device = _device(args.device)
    init_distributed(device)
    if device.type == "cuda" and dist.is_initialized():
        device = torch.device("cuda", torch.cuda.current_device())
    file_config = _read_config(args.config)
    options = dict(file_config.get("model", {}))
    options.update(dict(_parse_set(item) for item in args.set))
    train_options = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "checkpoint_every": args.checkpoint_every,
        "keep_checkpoints": args.keep_checkpoints,
    }
    out = Path(args.out or f"runs/{args.model}")
    stored = _resumed_run(out / "checkpoints", args.model) if args.resume else None
    train_options = {
        **(stored["extra"].get("train", {}) if stored else {}),
        **file_config.get("train", {}),
        **{k: v for k, v in train_options.items() if v is not None},
    }
    _check_options("train", train_options, {f.name for f in fields(TrainConfig)})
    _check_options(f"{args.model} model", options, recipe.option_names())
    config = TrainConfig(**train_options)
    stored_seed = stored["extra"].get("train", {}).get("seed") if stored else None
    if args.seed is not None and stored_seed is not None and args.seed != stored_seed:
        # The remaining batches follow the run's seed (bit-for-bit resume), not a new one.
        raise ValueError(f"a resumed run keeps its seed, {stored_seed}")
    if recipe.steps is not None and config.grad_clip is not None:
        raise ValueError(
            f"grad_clip is for the likelihood models; the {args.model} trainer does not clip"
        )
    trained_on = stored["extra"].get("data", {}) if stored else {}
    data = _load_data(recipe, args, "train", trained_on)
    torch.manual_seed(config.seed)
    model_config = _model_config(recipe, data, options, stored["config"] if stored else None)
    model = recipe.model(**model_config).to(device)
    hooks = []
    if args.sample_every:

        def grid(step: int) -> None:
            # The same noise at every step (progress is comparable), from a generator of its
            # own (the training run's random stream is untouched); a translation model shows
            # 8 inputs next to their translations.
            options = SampleOptions(
                generator=torch.Generator(device).manual_seed(0),
                inputs=data.a if recipe.translation else None,
            )
            model.eval()
            with torch.no_grad():
                images = recipe.sample(model, 8 if recipe.translation else 16, options)
            from pygen.utils.png import save_image_grid

            save_image_grid(images, out / "samples" / f"step-{step:08d}.png", nrow=4, scale=4)

        hooks.append((args.sample_every, grid))
    if recipe.steps is not None:
        steps = recipe.steps(model, data, config)
    elif recipe.loss is not None:
        steps = LossSteps(model, recipe.loss, data.images, data.labels, config)
    else:
        raise TypeError(f"the {args.model} recipe has neither a loss nor training steps")
    metrics = train_steps(
        steps,
        model,
        config,
        out,
        model_name=args.model,
        model_config=model_config,
        resume=args.resume,
        progress=not args.quiet,
        hooks=hooks,
        extra={"data": _data_args(args, trained_on)},
    )
    if world()[0] == 0:
        test = _load_data(recipe, args, "test", trained_on)
        result = {
            "final_loss": metrics[-1]["loss"] if metrics else None,
            **recipe.evaluate(model, test),
        }
        (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({"out": str(out), **result}, indent=1))
    return 0


def _check_options(section: str, options: dict[str, Any], valid: set[str]) -> None:
    """A clear error for options (from --set or a config file) no constructor takes, naming
    them and the valid ones, instead of a TypeError traceback from inside it."""
    unknown = sorted(set(options) - valid)
    if unknown:
        raise ValueError(
            f"unknown {section} option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}"
        )


def _resumed_run(ckpt_dir: Path, model_name: str) -> dict[str, Any] | None:
    """The sidecar of the run a resume continues (None before its first checkpoint): its model
    config, and the train options and data that options not given again default to."""
    if not (ckpt_dir / LATEST).is_file():
        return None
    sidecar = load_sidecar(ckpt_dir)
    if sidecar["model"] != model_name:
        raise ValueError(f"{ckpt_dir} holds a {sidecar['model']} run, not {model_name}")
    return sidecar


def _model_config(recipe, data, options: dict[str, Any], stored: dict[str, Any] | None):
    """The model's constructor arguments: the recipe's for the data and options, or a resumed
    run's own. An option the data decides (``image_size``, ``channels``) or one that would change
    a resumed model is an error, not silently dropped."""
    built = recipe.config(data, options)
    fixed = {k: built[k] for k in options if _plain(built.get(k)) != _plain(options[k])}
    if fixed:
        raise ValueError(f"option(s) fixed by the data: {fixed}; leave them out")
    _check_types(options, recipe.option_types())
    if stored is None:
        return built
    changed = {k: stored.get(k) for k in options if _plain(stored.get(k)) != _plain(options[k])}
    if changed:
        raise ValueError(f"a resumed run keeps its model; it was trained with {changed}")
    # What the data fixes (image size, channels, levels) must be what the run trained on.
    for_data = recipe.config(data, stored)
    differ = {k: for_data[k] for k in stored if _plain(for_data.get(k)) != _plain(stored[k])}
    if differ:
        trained = {k: stored[k] for k in differ}
        raise ValueError(f"the run was trained on data with {trained}; this data has {differ}")
    return stored


def _check_types(options: dict[str, Any], types: dict[str, Any]) -> None:
    """An option of a type its constructor's annotation does not allow (``hidden=abc``,
    ``hidden=8.5``): a clear error here, not a failure inside the constructor."""
    for key, value in options.items():
        if key in types and not _allows(types[key], value):
            hint = getattr(types[key], "__name__", str(types[key]))
            raise ValueError(f"option {key} must be {hint}, got {value!r}")


def _allows(hint: Any, value: Any) -> bool:
    """Whether ``value`` (as JSON or YAML gives it) fits the annotation ``hint``: an int is a
    float, a bool is no number, a list is a sequence; Any and callables take anything."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_allows(arg, value) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin in (list, tuple, Sequence):
        return isinstance(value, (list, tuple))
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):  # bool, str, a class (a likelihood object)
        return isinstance(value, hint)
    return True  # Any, callables


def _plain(value: Any) -> Any:
    """Tuples as lists: a config read back from JSON compares equal to the one given."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep:
        raise ValueError(f"--set takes key=value, got {item!r}")
    return key, _parse_value(value)


def _data_args(args: argparse.Namespace, trained: dict[str, Any]) -> dict[str, Any]:
    """The data options: those given, else (resume, eval, sample) those the checkpoint was
    trained on (``trained``, its sidecar's ``extra["data"]``), else the defaults."""
    specs = {"data": args.data, "data_b": args.data_b}
    given = {k: absolute_spec(v) if v is not None else None for k, v in specs.items()}
    given["split_seed"] = args.split_seed
    defaults = {"data": "digits", "data_b": None, "split_seed": 0}
    return {k: given[k] if given[k] is not None else trained.get(k, defaults[k]) for k in given}


def _load_data(recipe, args: argparse.Namespace, split: str, trained: dict[str, Any]):
    d = _data_args(args, trained)
    return recipe.load_data(d["data"], d["data_b"], split, d["split_seed"])


def load_model(path: str, device: torch.device):
    ckpt = load_checkpoint(path, training=False)
    model = build_model(ckpt.model_name, ckpt.config)
    load_weights(model, ckpt)
    return ckpt, model.to(device).eval()


def cmd_sample(args: argparse.Namespace) -> int:
    from pygen.utils.png import save_image_grid

    device = _device(args.device)
    init_distributed(device)
    rank, world_size = world()
    ckpt, model = load_model(args.checkpoint, device)
    recipe = get_recipe(ckpt.model_name)
    if args.label is not None and not recipe.conditional(model):
        raise ValueError(
            f"--label is for class-conditional models; this {ckpt.model_name} is unconditional"
        )
    if args.complete is not None and not recipe.completes:
        raise ValueError(f"--complete is for autoregressive image models, not {ckpt.model_name}")
    if args.method is not None and args.method not in recipe.methods:
        takes = f"one of {', '.join(recipe.methods)}" if recipe.methods else "none"
        raise ValueError(f"{ckpt.model_name} takes --method {takes}, got {args.method!r}")
    if args.temperature is not None and not recipe.tempered:
        raise ValueError(
            f"--temperature is for autoregressive models and flows, not {ckpt.model_name}"
        )
    if args.temperature is not None and not args.temperature > 0:
        raise ValueError(f"--temperature must be > 0, got {args.temperature}")
    share = args.n // world_size + (1 if rank < args.n % world_size else 0)
    gen = torch.Generator(device).manual_seed(derived_seed(args.seed, "sample", rank))
    inputs = labels = None
    if recipe.translation is not None:
        inputs = _load_data(recipe, args, "test", ckpt.extra.get("data", {})).a
    elif args.complete is not None:
        data = _load_data(recipe, args, "test", ckpt.extra.get("data", {}))
        inputs, labels = data.images, data.labels
    temperature = 1.0 if args.temperature is None else args.temperature
    options = SampleOptions(
        args.method, temperature, args.label, gen, inputs, args.complete, labels
    )
    images: torch.Tensor | None = None  # a rank with no share (--n below the rank count): none
    if share:
        with torch.no_grad():
            images = recipe.sample(model, share, options).float().cpu()
    if world_size > 1:
        parts: list[torch.Tensor | None] = [None] * world_size
        dist.all_gather_object(parts, images)
        images = torch.cat([part for part in parts if part is not None])
    if rank == 0:
        images = typing.cast(torch.Tensor, images)  # rank 0 has a share: --count >= 1
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        nrow = args.nrow or (9 if args.complete is not None else 8)  # completions: 3 triplets
        grid = save_image_grid(images, out / "samples.png", nrow=nrow, scale=args.scale)
        np.savez(out / "samples.npz", images=images.numpy())
        print(json.dumps({"grid": str(grid), "npz": str(out / "samples.npz"), "n": len(images)}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    device = _device(args.device)
    ckpt, model = load_model(args.checkpoint, device)
    recipe = get_recipe(ckpt.model_name)
    data = _load_data(recipe, args, args.split, ckpt.extra.get("data", {}))
    with torch.no_grad():
        result = recipe.evaluate(model, data)
    print(json.dumps({"checkpoint": str(ckpt.path), "step": ckpt.step, **result}, indent=1))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    try:
        from benchmarks import run
    except ImportError:
        print("pygen bench runs from a source checkout (the benchmarks/ folder)", file=sys.stderr)
        return 2
    return run.main(
        (["--quick"] if args.quick else [])
        + (["--ops", *args.ops] if args.ops else [])
        + (["--seconds", str(args.seconds)] if args.seconds is not None else [])
    )


def cmd_demo(args: argparse.Namespace) -> int:
    from pygen.demo import run_demo

    return run_demo(Path(args.out), minutes=args.minutes, device=_device(args.device))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pygen", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument(
        "--data",
        help="digits, mnist:ROOT, cifar10:ROOT, an .npy/.npz file or an image folder (default:"
        " train digits; sample and eval: the checkpoint's)",
    )
    data.add_argument(
        "--data-b",
        help="translation models (cyclegan, pix2pix): domain B, a dataset like --data, or "
        "invert / mirror: --data's images inverted / mirrored left-right (default invert)",
    )
    data.add_argument(
        "--split-seed",
        type=int,
        help="seed of the train/test split (default 0; sample and eval: the checkpoint's)",
    )

    t = sub.add_parser("train", parents=[common, data], help="train a model")
    t.add_argument("model", help="model family (see `pygen info`)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--checkpoint-every", type=int)
    t.add_argument("--keep-checkpoints", type=int, help="keep the newest N checkpoints (0: all)")
    t.add_argument(
        "--sample-every",
        type=_int_at_least(0),
        default=0,
        help="write a sample grid every N steps (0: never)",
    )
    t.add_argument("--config", help="YAML/JSON file with 'model' and 'train' sections")
    t.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model hyper-parameter (repeatable), e.g. --set hidden=32",
    )
    t.add_argument("--out", help="run folder (default runs/MODEL)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run's last checkpoint (train options not given: the run's)",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_train)

    s = sub.add_parser(
        "sample",
        parents=[common, data],
        help="sample from a checkpoint (translation models: pairs of test inputs from --data "
        "and their translations; --complete: completions of test images)",
    )
    s.add_argument("checkpoint", help="a run's checkpoints folder or one checkpoint")
    s.add_argument(
        "--count",
        "--n",
        dest="n",
        type=_positive_int,
        default=16,
        help="images to draw (>= 1; under torchrun write --count: torchrun reads --n as its own)",
    )
    s.add_argument("--method", help="sampler (model dependent, e.g. fused, cached, naive)")
    s.add_argument(
        "--temperature",
        type=float,
        help="autoregressive models and flows: softmax / prior temperature (default 1)",
    )
    s.add_argument("--label", type=int, help="class label for conditional models")
    s.add_argument(
        "--complete",
        type=int,
        metavar="ROWS",
        help="pixelcnn, pixelrnn: complete --n random test images (--data, default the "
        "checkpoint's) from their top ROWS rows; the grid shows each as kept rows, completion, "
        "original",
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--nrow", type=_positive_int, help="images per grid row (default 8; 9)")
    s.add_argument("--scale", type=_positive_int, default=4, help="pixel enlargement in the PNG")
    s.add_argument("--out", default="samples")
    s.set_defaults(fn=cmd_sample)

    e = sub.add_parser("eval", parents=[common, data], help="evaluate a checkpoint")
    e.add_argument("checkpoint")
    e.add_argument("--split", default="test", choices=["train", "test", "all"])
    e.set_defaults(fn=cmd_eval)

    b = sub.add_parser("bench", help="run the benchmark suite and rebuild the report")
    b.add_argument("--quick", action="store_true")
    b.add_argument("--ops", nargs="*")
    b.add_argument("--seconds", type=float, help="end within this many seconds (fewer rounds)")
    b.set_defaults(fn=cmd_bench)

    d = sub.add_parser("demo", parents=[common], help="train a PixelCNN on digits, sample, compare")
    d.add_argument("--out", default="demo_out")
    d.add_argument("--minutes", type=float, default=2.0, help="training time budget")
    d.set_defaults(fn=cmd_demo)

    i = sub.add_parser("info", help="build, devices and versions")
    i.set_defaults(fn=cmd_info)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command: parse ``argv`` and run it (errors raise; ``run`` reports them)."""
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# What a user's options, files and data can raise: reported as one line by ``run``.
USER_ERRORS = (ValueError, TypeError, OSError, ImportError, CheckpointError)


def run(argv: list[str] | None = None) -> int:
    """The ``pygen`` executable: ``main``, with a user's error reported as one line and exit
    status 2 (as argparse reports a bad argument); ``PYGEN_TRACEBACK=1`` shows the traceback."""
    try:
        return main(argv)
    except USER_ERRORS as err:
        if os.environ.get("PYGEN_TRACEBACK") == "1":
            raise
        command = (argv if argv is not None else sys.argv[1:])[:1]
        print(f"pygen {' '.join(command)}: error: {err}", file=sys.stderr)
        print("(PYGEN_TRACEBACK=1 shows where it was raised)", file=sys.stderr)
        return 2
