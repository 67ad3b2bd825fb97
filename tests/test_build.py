"""The build: what pygen.build_info() reports, and the guard against a torch mismatch."""

import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import pygen
from pygen import _extension
from pygen._extension import check_torch_version


def test_build_info_reports_the_build():
    info = pygen.build_info()
    assert {"cuda", "cuda_arch_list", "torch_version", "openmp", "cxx_compiler"} <= set(info)
    assert info["torch_version"] == torch.__version__
    assert isinstance(info["cuda"], bool) and isinstance(info["openmp"], bool)
    assert bool(info["cuda_arch_list"]) == info["cuda"]
    assert info["cxx_compiler"].split()[-1][0].isdigit()  # "GNU 12.2.0"
    assert info["cuda_compiler"].startswith("nvcc ") == info["cuda"]
    # The samplers' CPU products take 64-byte vectors where the CPU is x86-64-v4 (AVX-512 F, BW,
    # CD, DQ and VL), 32 where it is x86-64-v3 (AVX2, FMA, ...), else 16, as in a build for the
    # baseline alone (a check build).
    assert isinstance(info["cpu_baseline_only"], bool)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and platform.machine() == "x86_64":
        flags = set(re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.M).group(1).split())
        v4 = {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
        v3 = {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "xsave", "abm"}
        levels = 0 if info["cpu_baseline_only"] else (v3 <= flags) + (v3 | v4 <= flags)
        assert info["cpu_matmul_vector_bytes"] == [16, 32, 64][levels]


@pytest.mark.skipif(not os.environ.get("CI"), reason="CI only: the CUDA sources must compile there")
def test_ci_compiles_the_cuda_sources():
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    if shutil.which("nvcc") is None and not os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        pytest.skip("no nvcc on this machine")
    assert pygen.build_info()["cuda"], "nvcc is present but the CUDA kernels were not compiled"


def test_openmp_parallelizes_the_cpu_kernels():
    assert pygen.build_info()["openmp"]


def test_torch_version_mismatch_asks_for_a_rebuild():
    check_torch_version("2.14.1+cu130", "2.14.1+cu130")
    with pytest.raises(ImportError, match="rebuild"):
        check_torch_version("2.11.0+cu130", "2.14.1+cu130")


def test_a_missing_extension_names_itself_and_the_rebuild(monkeypatch):
    # `from pygen import _C` reported a missing file as a circular import.
    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(_extension.importlib, "import_module", missing)
    with pytest.raises(ImportError, match=r"No module named 'pygen._C'.*rebuild pygen"):
        _extension.load()


ROOT = Path(__file__).resolve().parent.parent
CMAKE = shutil.which("cmake", path=str(Path(sys.executable).parent)) or shutil.which("cmake")


@pytest.mark.skipif(
    CMAKE is None or shutil.which("nvcc", path="/usr/local/cuda/bin") is None,
    reason="needs cmake and nvcc",
)
def test_cuda_arch_lists_below_sm_80_are_refused_and_lists_take_semicolons(tmp_path):
    def configure(arch: str) -> subprocess.CompletedProcess:
        env = os.environ | {"TORCH_CUDA_ARCH_LIST": arch, "PYGEN_CUDA": "1"}
        env["PATH"] = f"{Path(sys.executable).parent}:/usr/local/cuda/bin:{env['PATH']}"
        argv = [CMAKE, "-S", str(ROOT), "-B", str(tmp_path / arch.replace(";", "_")), "-G", "Ninja"]
        argv.append(f"-DPython_EXECUTABLE={sys.executable}")
        return subprocess.run(argv, env=env, capture_output=True, text=True)

    refused = configure("7.5;9.0+PTX")
    assert refused.returncode != 0 and "need sm_80 or newer" in refused.stdout + refused.stderr
    accepted = configure("8.0;9.0a")  # the ";" once split the compile definition in two
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    ninja = (tmp_path / "8.0_9.0a" / "build.ninja").read_text()
    assert "arch=compute_80,code=[sm_80]" in ninja and "arch=compute_90a,code=[sm_90a]" in ninja
