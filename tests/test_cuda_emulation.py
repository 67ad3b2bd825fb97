"""Every CUDA kernel of pygen (the samplers' PixelCNN block and cluster kernels and PixelRNN's,
the MADE solve's, reparameterize + KL's, affine coupling's and the cluster exchange) run on CPU
threads by scripts/emulate_cuda.py, against the CPU kernels or the twin: the only run they get
without a GPU. Here under AddressSanitizer on the small cases; ``python scripts/emulate_cuda.py``
runs every configuration under ThreadSanitizer."""

from __future__ import annotations

import importlib.util
import itertools
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("emulate_cuda", ROOT / "scripts/emulate_cuda.py")
emulate_cuda = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(emulate_cuda)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """The emulation's binary for a kernel file (built once per module), under AddressSanitizer:
    an access outside an array, global or shared, fails the case as memcheck would."""
    if shutil.which("g++") is None:
        pytest.skip("needs g++ to build the emulation")
    built: dict[str, Path] = {}

    def binary(kernel: str) -> Path:
        if kernel not in built:
            workdir = tmp_path_factory.mktemp("emulate_cuda")
            built[kernel] = emulate_cuda.build(workdir, kernel, "address")
        return built[kernel]

    return binary


def sampler_case_id(case) -> str:
    dtype, use_noise = case
    return f"{str(dtype)[6:]}-{'noise' if use_noise else 'seed'}"


@pytest.mark.parametrize("config", emulate_cuda.QUICK_CONFIGS, ids=str)
@pytest.mark.parametrize("case", emulate_cuda.SAMPLER_CASES, ids=sampler_case_id)
def test_emulated_kernels_draw_the_cpu_kernels_images(emulated, tmp_path, case, config):
    # float64 and float32: the CPU kernel's images; 16-bit: logits that follow the float32 forward
    # pass of the emulated images, and draws that follow the logits.
    dtype, use_noise = case
    assert (
        emulate_cuda.run_case(emulated("pixelcnn"), tmp_path, "grey", dtype, use_noise, config)
        is None
    )


@pytest.mark.parametrize("config", [(4, 2, 1, 1, 0, 0), (4, 2, 1, 1, 1, 0)], ids=str)
def test_emulated_cluster_kernel_on_a_class_conditional_rgb_model(emulated, tmp_path, config):
    # Hidden 30 and 17 levels over 4 blocks: slices partly past the end; unfolded and folded.
    case = ("rgb-conditional", torch.float64, True, config)
    assert emulate_cuda.run_case(emulated("pixelcnn"), tmp_path, *case) is None


def test_emulated_cluster_kernel_with_groups_of_16_float32(emulated, tmp_path):
    # 16 samples per group (3 in the batch: the group is partial); 8 hidden units per block over
    # the emulation's 2 warps: passes of 2 units, whose 32 items the halving exchanges reduce.
    case = ("rgb-conditional", torch.float32, True, (4, 16, 0, 0, 1, 0))
    assert emulate_cuda.run_case(emulated("pixelcnn"), tmp_path, *case) is None


@pytest.mark.parametrize("use_noise", [True, False], ids=["noise", "seed"])
@pytest.mark.parametrize("config", [(2, 16, 1, 1, 1, 1), (8, 16, 0, 0, 0, 1)], ids=str)
def test_emulated_cluster_kernel_on_tensor_cores(emulated, tmp_path, config, use_noise):
    # m16n8k8 tiles from the emulated mma.sync (shim.h): hidden 16 over 2 blocks (a whole column
    # tile per gate half, resident, folded) and over 8 (2 units a block: mostly empty columns,
    # streamed); the three TF32 products keep the CPU kernel's images.
    case = ("grey-16", torch.float32, use_noise, config)
    assert emulate_cuda.run_case(emulated("pixelcnn"), tmp_path, *case) is None


@pytest.mark.parametrize(
    ("dtype", "config"),
    [(torch.bfloat16, (2, 16, 1, 1, 1, 1)), (torch.float16, (8, 16, 0, 0, 0, 1))],
    ids=str,
)
def test_emulated_cluster_kernel_on_tensor_cores_16_bit(emulated, tmp_path, dtype, config):
    # m16n8k16 tiles of 16-bit weights (shim.h's mma.sync): the logits follow the float32
    # forward pass and every value is the draw of its noise (compare_16_bit).
    case = ("grey-16", dtype, True, config)
    assert emulate_cuda.run_case(emulated("pixelcnn"), tmp_path, *case) is None


@pytest.mark.parametrize("case", emulate_cuda.PIXELRNN_CASES, ids=str)
@pytest.mark.parametrize("sampler_case", emulate_cuda.SAMPLER_CASES, ids=sampler_case_id)
def test_emulated_pixelrnn_kernel_draws_the_cpu_kernels_images(
    emulated, tmp_path, sampler_case, case
):
    dtype, use_noise = sampler_case
    assert (
        emulate_cuda.run_pixelrnn_case(emulated("pixelrnn"), tmp_path, case, dtype, use_noise)
        is None
    )


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("scale_fn", ["tanh", "sigmoid"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", emulate_cuda.MADE_CASES, ids=str)
def test_emulated_made_solve_kernels_equal_the_cpu_kernels(
    emulated, tmp_path, case, dtype, scale_fn, backward
):
    error = emulate_cuda.run_made_case(
        emulated("made_solve"), tmp_path, case, dtype, scale_fn, backward
    )
    assert error is None


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("use_noise", [True, False], ids=["noise", "seed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", emulate_cuda.REPARAM_CASES[:2], ids=str)
def test_emulated_reparam_kl_kernels_equal_the_cpu_kernels(
    emulated, tmp_path, case, dtype, use_noise, backward
):
    # Both instantiations where the row is whole groups: the vector one (16-bit rows load the
    # next group ahead) and the element one; mu and logvar contiguous or rows apart.
    paths = emulate_cuda.reparam_vector_paths(case, dtype)
    for vector, stacked in itertools.product(paths, (False, True)):
        error = emulate_cuda.run_reparam_case(
            emulated("reparam_kl"), tmp_path, case, dtype, use_noise, vector, backward, stacked
        )
        assert error is None, f"vector={vector} stacked={stacked}: {error}"


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("scale_fn", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", emulate_cuda.AFFINE_CASES, ids=str)
def test_emulated_affine_coupling_kernels_equal_the_cpu_kernels(
    emulated, tmp_path, case, dtype, scale_fn, reverse, backward
):
    # Every mask kind; the vector and element paths where the sample is whole groups; log_scale
    # and shift contiguous, rows apart (chunks of stacked tensors) or, for images and a log_scale,
    # in runs of each pixel's channels (a channels-last x's stacked params).
    layouts = ["rows", "stacked"]
    if len(case[0]) == 3 and scale_fn != "none":
        layouts.append("runs")
    for layout in layouts:
        for vector in emulate_cuda.affine_vector_paths(case, layout):
            error = emulate_cuda.run_affine_case(
                emulated("affine_coupling"),
                tmp_path,
                case,
                dtype,
                scale_fn,
                reverse,
                vector,
                backward,
                layout,
            )
            assert error is None, f"vector={vector} layout={layout}: {error}"


@pytest.mark.parametrize(("blocks", "steps"), emulate_cuda.CEILINGS_CASES, ids=str)
def test_emulated_cluster_exchange_equals_its_twin(emulated, tmp_path, blocks, steps):
    error = emulate_cuda.run_ceilings_case(emulated("ceilings"), tmp_path, blocks, steps)
    assert error is None
