// The one Python module of pygen. Importing it registers the torch operators pygen::* (each op's
// TORCH_LIBRARY block lives beside its kernels); the module itself reports the build facts.
#include <torch/extension.h>

#include "common/cpu_matmul.h"

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef PYGEN_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["cuda_arch_list"] = std::string(PYGEN_CUDA_ARCH_LIST);
  info["torch_version"] = std::string(PYGEN_TORCH_VERSION);
  info["cxx_compiler"] = std::string(PYGEN_CXX_COMPILER);
  info["cuda_compiler"] = std::string(PYGEN_CUDA_COMPILER);
#ifdef PYGEN_WITH_OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
#ifdef PYGEN_CPU_BASELINE
  info["cpu_baseline_only"] = true;
#else
  info["cpu_baseline_only"] = false;
#endif
  // Not a build fact but the CPU's: the vector width of the samplers' products here.
  info["cpu_matmul_vector_bytes"] = pygen::matmul_vector_bytes();
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pygen fused kernels (CPU and CUDA)";
  m.def("build_info", &build_info, "How this module was built.");
}
