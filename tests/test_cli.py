"""The pygen command end to end on tiny settings (seconds each)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import run_two_ranks

from pygen.cli import _check_types, _model_config, main, run
from pygen.data import ImageData, load_dataset
from pygen.recipes import RECIPES, _sample_metrics
from pygen.train import CheckpointError, load_checkpoint

TINY_VAE = ["--steps", "12", "--batch-size", "16", "--quiet", "--set", "hidden=32"]


def run_json(capsys, argv: list[str]) -> dict:
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{") :])


def test_info(capsys):
    info = run_json(capsys, ["info"])
    assert info["pygen"]["torch_version"] == info["torch"]
    assert "vae" in info["models"]
    if sys.platform == "linux":  # torch's own libraries map the C++ runtime
        assert "libstdc++" in info["libstdcxx"]


def test_train_sample_eval_and_resume(tmp_path, capsys):
    run = tmp_path / "run"
    result = run_json(capsys, ["train", "vae", *TINY_VAE, "--out", str(run), "--sample-every", "6"])
    assert result["negative_elbo_nats"] > 0
    assert (run / "curves.png").exists() and (run / "samples" / "step-00000012.png").exists()
    assert load_checkpoint(run / "checkpoints").step == 12

    run_json(
        capsys, ["train", "vae", *TINY_VAE[2:], "--steps", "18", "--out", str(run), "--resume"]
    )
    assert load_checkpoint(run / "checkpoints").step == 18
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 18

    sampled = run_json(
        capsys, ["sample", str(run / "checkpoints"), "--n", "5", "--out", str(tmp_path / "s")]
    )
    images = np.load(tmp_path / "s" / "samples.npz")["images"]
    assert sampled["n"] == 5 and images.shape == (5, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    assert (tmp_path / "s" / "samples.png").read_bytes()[:4] == b"\x89PNG"

    evaluated = run_json(capsys, ["eval", str(run / "checkpoints"), "--split", "test"])
    assert evaluated["step"] == 18 and evaluated["iwae100_nll_nats"] > 0
    assert evaluated == run_json(capsys, ["eval", str(run / "checkpoints"), "--split", "test"])


def test_resume_takes_a_given_lr_and_keeps_the_run_options_not_given(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "vae", "--quiet", "--set", "hidden=16", "--out", str(run)]
    run_json(capsys, [*argv, "--steps", "4", "--batch-size", "8", "--lr", "2e-3"])
    run_json(capsys, [*argv, "--steps", "6", "--lr", "5e-4", "--resume"])
    ckpt = load_checkpoint(run / "checkpoints")
    assert ckpt.extra["train"]["lr"] == 5e-4 and ckpt.extra["train"]["batch_size"] == 8
    assert [g["lr"] for g in ckpt.training_state["param_groups"]] == [5e-4]
    run_json(capsys, [*argv, "--steps", "8", "--resume"])  # no --lr: the run's, not the default
    ckpt = load_checkpoint(run / "checkpoints")
    assert ckpt.step == 8 and ckpt.extra["train"]["lr"] == 5e-4
    assert [g["lr"] for g in ckpt.training_state["param_groups"]] == [5e-4]


def test_resume_keeps_the_runs_model_and_data(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 4, size=(12, 1, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images)
    run = ["--quiet", "--batch-size", "4", "--out", str(tmp_path / "run")]
    first = ["--set", "hidden=8", "--data", str(tmp_path / "x.npz")]
    run_json(capsys, ["train", "vae", *run, *first, "--steps", "2"])
    run_json(capsys, ["train", "vae", *run, "--steps", "3", "--resume"])  # no --set, no --data
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt.step == 3 and ckpt.config["hidden"] == 8
    assert ckpt.extra["data"]["data"] == str(tmp_path / "x.npz")
    with pytest.raises(ValueError, match=r"resumed run keeps its model.*'hidden': 8"):
        main(["train", "vae", *run, "--steps", "4", "--resume", "--set", "hidden=16"])
    with pytest.raises(ValueError, match="holds a vae run, not nice"):
        main(["train", "nice", *run, "--steps", "4", "--resume"])
    with pytest.raises(ValueError, match="resumed run keeps its seed, 0"):
        main(["train", "vae", *run, "--steps", "4", "--resume", "--seed", "5"])
    # Other data: the model's shape and levels come from the data, and the run's must hold.
    with pytest.raises(ValueError, match=r"trained on data with \{'data_shape': \[1, 6, 6\]"):
        main(["train", "vae", *run, "--steps", "4", "--resume", "--data", "digits"])
    assert main(["train", "vae", *run, "--steps", "2", "--resume"]) == 0
    assert "already at step 3 (steps=2), nothing to train" in capsys.readouterr().err


def test_a_relative_data_path_is_recorded_absolute(tmp_path, capsys, monkeypatch):
    images = np.random.default_rng(0).integers(0, 4, size=(12, 1, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", images=images)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "vae", "--quiet", "--batch-size", "4", "--set", "hidden=8", "--steps", "2"]
    run_json(capsys, [*argv, "--data", "x.npz", "--out", "run"])
    assert load_checkpoint("run/checkpoints").extra["data"]["data"] == str(tmp_path / "x.npz")
    monkeypatch.chdir(tmp_path.parent)
    assert run_json(capsys, ["eval", str(tmp_path / "run" / "checkpoints")])["step"] == 2


def test_options_of_the_wrong_type_name_the_option(tmp_path):
    out = ["--out", str(tmp_path / "r")]
    with pytest.raises(ValueError, match=r"option hidden must be int, got 'abc'"):
        main(["train", "pixelcnn", "--set", "hidden=abc", *out])
    with pytest.raises(ValueError, match=r"got 8\.5"):
        main(["train", "pixelcnn", "--set", "hidden=8.5", *out])
    with pytest.raises(ValueError, match="option d_autoencoder must be bool"):
        main(["train", "mmdgan", "--set", "d_autoencoder=1", *out])
    with pytest.raises(ValueError, match=r"option hidden must be int \| None, got 'abc'"):
        main(["train", "vae", "--set", "hidden=abc", *out])  # a default of None: the annotation
    with pytest.raises(ValueError, match=r"option likelihood must be str \| .*Likelihood, got 3"):
        main(["train", "vae", "--set", "likelihood=3", *out])


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_every_recipe_types_every_option_and_takes_its_own_config(model):
    recipe = RECIPES[model]
    assert set(recipe.option_types()) >= recipe.option_names()
    data = recipe.load_data("digits", None, "test", 0)
    config = json.loads(json.dumps(recipe.config(data, {})))  # as a sidecar gives it back
    _check_types(config, recipe.option_types())


@pytest.mark.parametrize("model", ["pixelcnn", "pixelrnn"])
def test_autoregressive_defaults_fit_rgb_data(model):
    """The channel masks split the hidden units by channel: the default width must divide."""
    rgb = ImageData(torch.zeros(4, 3, 8, 8, dtype=torch.long), None, 256, "rgb")
    config = RECIPES[model].config(rgb, {})
    assert config["hidden"] % 3 == 0
    RECIPES[model].model(**config)  # builds
    assert RECIPES[model].config(rgb, {"hidden": 12})["hidden"] == 12


def test_grad_clip_is_checked_and_refused_where_unused(tmp_path):
    config = tmp_path / "c.yaml"
    out = ["--out", str(tmp_path / "r")]
    for value, error in (("-1", "must be > 0"), ("abc", "must be a number or null")):
        config.write_text(f"train: {{grad_clip: {value}}}\n")
        with pytest.raises((TypeError, ValueError), match=error):
            main(["train", "vae", "--config", str(config), *out])
    config.write_text("train: {grad_clip: 1.0}\n")
    with pytest.raises(ValueError, match="the dcgan trainer does not clip"):
        main(["train", "dcgan", "--config", str(config), *out])


def test_no_option_is_a_prefix_of_one_of_torchruns():
    """torchrun parses its own options anywhere in its arguments, abbreviations included: a pygen
    option that is the prefix of one of torchrun's (``--n`` of ``--nnodes``) never reaches pygen."""
    from torch.distributed.run import get_args_parser

    from pygen.cli import parser

    def long_options(actions):
        return {
            o for a in actions for o in a.option_strings if o.startswith("--") and o != "--help"
        }

    theirs = long_options(get_args_parser()._actions)
    commands = parser()._subparsers._group_actions[0].choices.values()
    ours = set().union(*(long_options(c._actions) for c in commands))
    clashes = {o for o in ours for t in theirs if t.startswith(o)} - {"--n"}  # --count's alias
    assert not clashes


def test_run_reports_a_users_error_in_one_line(tmp_path, capsys, monkeypatch):
    argv = ["train", "vae", "--set", "hiden=8", "--out", str(tmp_path / "r")]
    monkeypatch.delenv("PYGEN_TRACEBACK", raising=False)
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("pygen train: error: unknown vae model option(s) hiden")
    assert "Traceback" not in err
    monkeypatch.setenv("PYGEN_TRACEBACK", "1")
    with pytest.raises(ValueError, match="hiden"):
        run(argv)
    with pytest.raises(SystemExit):  # argparse's own errors stay argparse's
        run(["train", "vae", "--sample-every", "-1"])


def test_options_the_data_fixes_are_an_error_not_ignored(tmp_path):
    with pytest.raises(ValueError, match=r"fixed by the data: \{'image_size': 8\}"):
        main(["train", "dcgan", "--set", "image_size=32", "--out", str(tmp_path / "r")])


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_every_recipe_takes_its_own_config_back_as_options(model):
    # What a resumed or reproduced run passes: no option of its own config reads as changed.
    recipe = RECIPES[model]
    data = recipe.load_data("digits", None, "test", 0)
    config = json.loads(json.dumps(recipe.config(data, {})))  # as a sidecar gives it back
    assert _model_config(recipe, data, config, config) == config


def test_adversarial_resume_takes_a_given_lr(tmp_path, capsys):
    argv = ["train", "dcgan", "--quiet", "--set", "width=8", "--batch-size", "4"]
    argv += ["--device", "cpu", "--out", str(tmp_path / "run")]
    run_json(capsys, [*argv, "--steps", "2"])
    run_json(capsys, [*argv, "--steps", "3", "--lr", "1e-4", "--resume"])
    state = load_checkpoint(tmp_path / "run" / "checkpoints").training_state
    for optimizer in ("g_opt", "d_opt"):
        assert [g["lr"] for g in state[optimizer]["param_groups"]] == [1e-4]


def test_eval_and_sample_default_to_the_data_the_checkpoint_trained_on(tmp_path, capsys):
    run = tmp_path / "run"
    tiny = [
        "--steps",
        "3",
        "--batch-size",
        "8",
        "--quiet",
        "--set",
        "n_layers=1",
        "--set",
        "hidden=8",
    ]
    run_json(capsys, ["train", "pixelcnn", *tiny, "--split-seed", "3", "--out", str(run)])
    recorded = load_checkpoint(run / "checkpoints").extra["data"]
    assert recorded == {"data": "digits", "data_b": None, "split_seed": 3}
    checkpoints = str(run / "checkpoints")
    default = run_json(capsys, ["eval", checkpoints])
    assert default == run_json(capsys, ["eval", checkpoints, "--split-seed", "3"])
    assert default != run_json(capsys, ["eval", checkpoints, "--split-seed", "0"])


def test_config_file(tmp_path, capsys):
    config = tmp_path / "vae.yaml"
    config.write_text(
        "model:\n  latent_dim: 4\n  hidden: 16\ntrain:\n  steps: 5\n  batch_size: 8\n"
    )
    run_json(
        capsys, ["train", "vae", "--config", str(config), "--out", str(tmp_path / "r"), "--quiet"]
    )
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints")
    assert ckpt.config["latent_dim"] == 4 and ckpt.step == 5


def test_two_images_train_and_evaluate_on_one_each(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (2, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "two.npy", images)
    argv = ["train", "vae", "--steps", "2", "--batch-size", "2", "--quiet", "--set", "hidden=8"]
    result = run_json(capsys, [*argv, "--data", str(tmp_path / "two.npy"), "--out", str(tmp_path)])
    assert np.isfinite(result["negative_elbo_nats"]) and np.isfinite(result["iwae100_nll_nats"])


def test_unknown_options_name_the_key_and_the_valid_ones(tmp_path):
    out = ["--out", str(tmp_path / "r")]
    with pytest.raises(ValueError, match=r"unknown vae model option\(s\) hiden; valid: .*hidden"):
        main(["train", "vae", "--set", "hiden=32", *out])
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  stepz: 5\n")
    with pytest.raises(ValueError, match=r"unknown train option\(s\) stepz; valid: batch_size"):
        main(["train", "vae", "--config", str(config), *out])
    config.write_text("model: [1, 2]\n")
    with pytest.raises(ValueError, match="sections, each a mapping"):
        main(["train", "vae", "--config", str(config), *out])


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_every_recipe_lists_the_options_its_config_sets(model):
    recipe = RECIPES[model]
    data = recipe.load_data("digits", None, "test", 0)
    assert set(recipe.config(data, {})) <= recipe.option_names()


def test_bench_writes_results(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYGEN_RESULTS_DIR", str(tmp_path / "results"))
    assert main(["bench", "--quick", "--ops", "copy"]) == 0
    rows = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert rows[0]["op"] == "copy" and rows[0]["median_ms"] > 0
    assert (tmp_path / "REPORT.md").exists()


def test_bench_past_its_deadline_skips_every_case(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PYGEN_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("PYGEN_BENCH_DEADLINE", "")  # restored afterwards: --seconds sets it
    assert main(["bench", "--quick", "--ops", "copy", "--seconds", "0"]) == 0
    assert "deadline" in capsys.readouterr().out
    assert not list((tmp_path / "results").glob("*.json"))


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        main(["train", "nope", "--out", str(tmp_path / "x")])
    with pytest.raises(ValueError, match="key=value"):
        main(["train", "vae", "--set", "hidden", "--out", str(tmp_path / "x")])
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        main(["sample", str(tmp_path / "missing")])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        main(
            ["train", "vae", "--data", str(tmp_path / "nowhere.npy"), "--out", str(tmp_path / "y")]
        )
    with pytest.raises(SystemExit):
        main(["train"])


@pytest.mark.parametrize("model", ["dcgan", "mmdgan", "sinkhorngan"])
def test_gan_train_sample_eval(tmp_path, capsys, model):
    run = tmp_path / model
    argv = ["train", model, "--steps", "4", "--batch-size", "16", "--quiet", "--set", "width=8"]
    result = run_json(capsys, [*argv, "--out", str(run)])
    assert result["mmd2_to_data"] > -0.1
    ckpt = load_checkpoint(run / "checkpoints")
    assert ckpt.model_name == model and ckpt.step == 4
    # The MMD GAN's critic is an autoencoder: its decoder is part of the checkpoint.
    has_decoder = any(key.startswith("discriminator.decoder.") for key in ckpt.state_dict)
    assert has_decoder == (model == "mmdgan")
    out = tmp_path / "s"
    run_json(capsys, ["sample", str(run / "checkpoints"), "--n", "3", "--out", str(out)])
    assert np.load(out / "samples.npz")["images"].shape == (3, 1, 8, 8)
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    evaluated = run_json(capsys, ["eval", str(run / "checkpoints")])
    metrics = ("mmd2_to_data", "precision", "recall", "density", "coverage")
    # The checkpoint's evaluation is the trained generator's (the training run's own metrics).
    assert {k: evaluated[k] for k in metrics} == pytest.approx({k: result[k] for k in metrics})
    assert evaluated == run_json(capsys, ["eval", str(run / "checkpoints")])  # repeatable


def test_sample_metrics_tell_the_data_from_a_collapsed_generator():
    data = load_dataset("digits", "test")
    real = data.images.float() / (data.n_levels - 1)
    copies = _sample_metrics(real, data)
    assert copies["precision"] == copies["recall"] == copies["coverage"] == 1.0
    assert abs(copies["mmd2_to_data"]) < 1e-2
    collapsed = _sample_metrics(real[:1].expand_as(real), data)  # one image, every time
    assert collapsed["precision"] == 1.0 and collapsed["recall"] < 0.05
    assert collapsed["coverage"] < 0.05 and collapsed["mmd2_to_data"] > 0.1


# Tiny settings of every adversarial recipe; CycleGAN's pools are small enough to fill, so their
# random replacement is part of the resumed state.
ADVERSARIAL = {
    "dcgan": ["--set", "width=8"],
    "mmdgan": ["--set", "width=8"],
    "sinkhorngan": ["--set", "width=8"],
    "bigan": ["--set", "hidden=16"],
    "cyclegan": ["--set", "width=4", "--set", "d_width=4", "--set", "pool_size=6"],
    "pix2pix": ["--set", "width=4", "--set", "d_width=4", "--data-b", "mirror"],
}


@pytest.mark.parametrize("model", sorted(ADVERSARIAL))
def test_adversarial_resume_is_bit_for_bit(tmp_path, capsys, model):
    # On the CPU: cuDNN's convolution backward may pick atomics-based algorithms on a GPU, and
    # cyclegan's resumed run there differed from the straight one (H200, 2026-11-27).
    argv = [
        "train",
        model,
        "--batch-size",
        "4",
        "--quiet",
        "--sample-every",
        "2",
        "--device",
        "cpu",
    ]
    argv += ADVERSARIAL[model]
    run_json(capsys, [*argv, "--steps", "4", "--out", str(tmp_path / "straight")])
    run_json(capsys, [*argv, "--steps", "2", "--out", str(tmp_path / "resumed")])
    run_json(capsys, [*argv, "--steps", "4", "--out", str(tmp_path / "resumed"), "--resume"])
    straight = load_checkpoint(tmp_path / "straight" / "checkpoints")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints")
    assert resumed.step == 4 and straight.state_dict.keys() == resumed.state_dict.keys()
    for name, tensor in straight.state_dict.items():
        assert torch.equal(tensor, resumed.state_dict[name]), name

    def last_row(run: str) -> dict:
        rows = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return {k: v for k, v in json.loads(rows[-1]).items() if k != "examples_per_s"}

    assert last_row("resumed") == last_row("straight")
    assert set(last_row("straight")) == {"step", "loss", "d_loss"}
    assert (tmp_path / "resumed" / "samples" / "step-00000004.png").exists()


def check_completions(capsys, checkpoints, out) -> None:
    """``sample --complete 3`` of 4 test digits: triplets of the kept rows, the completion and the
    test image, the completion equal to it in the kept rows; ``--complete 8`` leaves nothing."""
    argv = ["sample", str(checkpoints), "--n", "4", "--complete", "3", "--out", str(out)]
    assert run_json(capsys, argv)["n"] == 12
    kept, completion, original = (
        np.load(out / "samples.npz")["images"].reshape(4, 3, 64).swapaxes(0, 1)
    )
    test = load_dataset("digits", "test").images.flatten(1).numpy() / 16
    assert all((test == image).all(1).any() for image in original)
    assert (kept[:, :24] == original[:, :24]).all() and (kept[:, 24:] == 0).all()
    assert (completion[:, :24] == original[:, :24]).all()
    assert not (completion == original).all()  # the rest is drawn, not copied
    with pytest.raises(ValueError, match=r"complete_rows must be in \[0, 8\)"):
        main([*argv[:5], "8", "--out", str(out)])


def test_pixelcnn_recipe_and_demo(tmp_path, capsys):
    run = tmp_path / "pixelcnn"
    result = run_json(
        capsys,
        [
            "train",
            "pixelcnn",
            "--steps",
            "5",
            "--batch-size",
            "16",
            "--quiet",
            "--set",
            "hidden=8",
            "--set",
            "n_layers=2",
            "--set",
            "n_classes=10",
            "--out",
            str(run),
        ],
    )
    assert result["bits_per_dim"] > 0
    run_json(
        capsys,
        [
            "sample",
            str(run / "checkpoints"),
            "--n",
            "2",
            "--label",
            "3",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert np.load(tmp_path / "s" / "samples.npz")["images"].shape == (2, 1, 8, 8)
    check_completions(capsys, run / "checkpoints", tmp_path / "c")

    assert main(["demo", "--minutes", "0.001", "--out", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert set(summary["sampling"]) == {"fused", "cached", "naive"}
    assert summary["test_bits_per_dim"] < summary["independent_pixel_bits_per_dim"] + 1.0
    assert (tmp_path / "demo" / "samples.png").exists()
    assert (tmp_path / "demo" / "completions.png").exists()


@pytest.mark.parametrize("kind", ["row", "diagonal"])
def test_pixelrnn_recipe(tmp_path, capsys, kind):
    run = tmp_path / "pixelrnn"
    options = ["--set", "hidden=4", "--set", "n_layers=1", "--set", f"kind={kind}"]
    argv = ["train", "pixelrnn", "--steps", "3", "--batch-size", "8", "--quiet", *options]
    result = run_json(capsys, [*argv, "--out", str(run)])
    assert result["bits_per_dim"] > 0
    out = tmp_path / "s"
    run_json(capsys, ["sample", str(run / "checkpoints"), "--n", "2", "--out", str(out)])
    images = np.load(out / "samples.npz")["images"]
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    evaluated = run_json(capsys, ["eval", str(run / "checkpoints")])
    assert evaluated["bits_per_dim"] == pytest.approx(result["bits_per_dim"])  # the trained model
    check_completions(capsys, run / "checkpoints", tmp_path / "c")


@pytest.mark.parametrize("model", ["realnvp", "nice", "maf", "iaf"])
def test_flow_recipes(tmp_path, capsys, model):
    run = tmp_path / model
    result = run_json(
        capsys,
        [
            "train",
            model,
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--quiet",
            "--set",
            "hidden=16",
            "--out",
            str(run),
        ],
    )
    assert result["bits_per_dim"] > 0
    run_json(capsys, ["sample", str(run / "checkpoints"), "--n", "2", "--out", str(tmp_path / "s")])
    images = np.load(tmp_path / "s" / "samples.npz")["images"]
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    # The checkpoint's evaluation is the trained model's (a fresh model's differs).
    evaluated = run_json(capsys, ["eval", str(run / "checkpoints")])
    assert evaluated["bits_per_dim"] == pytest.approx(result["bits_per_dim"])


def sample_on_two_ranks(checkpoints, n: int, out) -> list[str]:
    """``pygen sample`` under two gloo ranks (as torchrun starts them); their outputs."""
    argv = [sys.executable, "-m", "pygen", "sample", str(checkpoints), "--n", str(n)]
    return run_two_ranks([*argv, "--device", "cpu", "--out", str(out)])


def test_sample_shards_across_two_ranks(tmp_path, capsys):
    run = tmp_path / "vae"
    run_json(capsys, ["train", "vae", *TINY_VAE, "--out", str(run)])
    outputs = sample_on_two_ranks(run / "checkpoints", 5, tmp_path / "sharded")
    assert json.loads(outputs[0])["n"] == 5 and outputs[1] == ""  # rank 0 writes, rank 1 is quiet
    images = np.load(tmp_path / "sharded" / "samples.npz")["images"]
    assert images.shape == (5, 1, 8, 8)
    assert not np.array_equal(images[0], images[3])  # ranks draw with different seeds


def test_sample_fewer_images_than_ranks(tmp_path, capsys):
    # A PixelCNN refuses to draw 0 images: the rank with no share must not ask it to.
    run = tmp_path / "pixelcnn"
    tiny = [
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--set",
        "n_layers=1",
        "--set",
        "hidden=8",
    ]
    run_json(capsys, ["train", "pixelcnn", *tiny, "--out", str(run)])
    outputs = sample_on_two_ranks(run / "checkpoints", 1, tmp_path / "one")
    assert json.loads(outputs[0])["n"] == 1
    assert np.load(tmp_path / "one" / "samples.npz")["images"].shape == (1, 1, 8, 8)


def test_sample_rejects_n_below_one_and_a_label_for_an_unconditional_model(tmp_path, capsys):
    run = tmp_path / "vae"
    run_json(capsys, ["train", "vae", *TINY_VAE, "--out", str(run)])
    for n in ("0", "-3"):
        with pytest.raises(SystemExit):
            main(["sample", str(run / "checkpoints"), "--n", n, "--out", str(tmp_path / "s")])
        assert "--n: must be an integer >= 1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--label is for class-conditional models"):
        main(["sample", str(run / "checkpoints"), "--label", "3", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="--complete is for autoregressive image models"):
        main(["sample", str(run / "checkpoints"), "--complete", "3", "--out", str(tmp_path / "s")])
    with pytest.raises(ValueError, match="--temperature is for autoregressive models and flows"):
        main(["sample", str(run / "checkpoints"), "--temperature", "0.5"])
    with pytest.raises(ValueError, match="vae takes --method none, got 'naive'"):
        main(["sample", str(run / "checkpoints"), "--method", "naive"])
    assert not (tmp_path / "s").exists()
    # sample and eval never unpickle the training state (only a resume needs it).
    checkpoint = load_checkpoint(run / "checkpoints").path
    (checkpoint / "training.pt").write_bytes(b"not a pickle")
    run_json(capsys, ["sample", str(run / "checkpoints"), "--n", "2", "--out", str(tmp_path / "s")])
    with pytest.raises(CheckpointError, match=r"training\.pt: unreadable"):
        load_checkpoint(run / "checkpoints")


def test_conditional_dcgan_trains_and_samples_a_class(tmp_path, capsys):
    argv = ["train", "dcgan", "--quiet", "--set", "width=8", "--batch-size", "8", "--steps", "2"]
    argv += ["--set", "num_classes=10", "--out", str(tmp_path / "run")]
    run_json(capsys, argv)
    checkpoints = str(tmp_path / "run" / "checkpoints")
    out = ["--n", "4", "--out", str(tmp_path / "s")]
    assert run_json(capsys, ["sample", checkpoints, "--label", "3", *out])["n"] == 4
    with pytest.raises(ValueError, match=r"label must be in \[0, 10\), got 12"):
        main(["sample", checkpoints, "--label", "12", *out])
    with pytest.raises(ValueError, match=r"num_classes=3 needs labels in \[0, 3\)"):
        main([*argv[:-1], str(tmp_path / "other"), "--set", "num_classes=3"])


def test_cnf_recipe(tmp_path, capsys):
    run = tmp_path / "cnf"
    options = ["--set", "hidden=16", "--set", "rtol=1e-3", "--set", "atol=1e-3"]
    argv = ["train", "cnf", "--steps", "3", "--batch-size", "16", "--quiet", *options]
    result = run_json(capsys, [*argv, "--out", str(run)])
    assert result["bits_per_dim"] > 0
    assert load_checkpoint(run / "checkpoints").config["trace"] == "hutchinson"
    run_json(capsys, ["sample", str(run / "checkpoints"), "--n", "2", "--out", str(tmp_path / "s")])
    images = np.load(tmp_path / "s" / "samples.npz")["images"]
    assert images.shape == (2, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    # The Hutchinson probes are drawn from a fixed seed: evaluation repeats exactly.
    evaluated = run_json(capsys, ["eval", str(run / "checkpoints")])
    assert (
        evaluated["bits_per_dim"]
        == run_json(capsys, ["eval", str(run / "checkpoints")])["bits_per_dim"]
    )


def test_bigan_recipe(tmp_path, capsys):
    run = tmp_path / "bigan"
    argv = ["train", "bigan", "--steps", "4", "--batch-size", "16", "--quiet", "--set", "hidden=16"]
    result = run_json(capsys, [*argv, "--out", str(run)])
    assert result["reconstruction_mse"] > 0 and result["random_z_mse"] > 0
    assert load_checkpoint(run / "checkpoints").step == 4
    run_json(capsys, ["sample", str(run / "checkpoints"), "--n", "3", "--out", str(tmp_path / "s")])
    images = np.load(tmp_path / "s" / "samples.npz")["images"]
    assert images.shape == (3, 1, 8, 8) and images.min() >= 0 and images.max() <= 1
    assert run_json(capsys, ["eval", str(run / "checkpoints")]) == {
        "checkpoint": str(load_checkpoint(run / "checkpoints").path),
        "step": 4,
        **{k: v for k, v in result.items() if k not in ("out", "final_loss")},
    }


@pytest.mark.parametrize(("model", "task"), [("cyclegan", None), ("pix2pix", "mirror")])
def test_translation_recipes(tmp_path, capsys, model, task):
    run = tmp_path / model
    domain = [] if task is None else ["--data-b", task]  # cyclegan: the default, invert
    options = ["--set", "width=4", "--set", "d_width=4"]
    argv = ["train", model, "--steps", "3", "--batch-size", "8", "--quiet", *options, *domain]
    result = run_json(capsys, [*argv, "--out", str(run)])
    assert result["translation_l1"] > 0 and "mmd2_to_b" in result
    test = load_dataset("digits", "test")
    digits = test.images.float() / (test.n_levels - 1) * 2 - 1
    target = -digits if task is None else digits.flip(-1)
    assert result["identity_l1"] == pytest.approx((digits - target).abs().mean().item())

    out = tmp_path / "s"
    sampled = run_json(
        capsys, ["sample", str(run / "checkpoints"), "--n", "3", *domain, "--out", str(out)]
    )
    images = np.load(out / "samples.npz")["images"]
    assert sampled["n"] == 6 and images.shape == (6, 1, 8, 8)
    assert images.min() >= 0 and images.max() <= 1
    inputs = (digits.flatten(1) + 1) / 2
    for image in images[::2]:  # each input is a held-out digit, followed by its translation
        assert (inputs - torch.from_numpy(image).flatten()).abs().sum(1).min() < 1e-5
    evaluated = run_json(capsys, ["eval", str(run / "checkpoints"), *domain])
    assert evaluated["translation_l1"] == pytest.approx(result["translation_l1"])
    np.save(tmp_path / "big.npy", np.zeros((10, 16, 16), dtype=np.uint8))
    with pytest.raises(ValueError, match="image size"):
        main(["eval", str(run / "checkpoints"), "--data-b", str(tmp_path / "big.npy")])


def test_second_domain_only_for_translation_models(tmp_path):
    with pytest.raises(ValueError, match="translation models only"):
        main(["train", "vae", "--data-b", "invert", "--out", str(tmp_path / "x")])
