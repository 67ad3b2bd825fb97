// pygen::_cluster_exchange(out, blocks, steps): argument checks and registration (ceilings.h).
#include "ceilings/ceilings.h"

#include <torch/library.h>

#include <limits>

namespace pygen::ceilings {
namespace {

void cluster_exchange(at::Tensor& out, int64_t blocks, int64_t steps) {
  TORCH_CHECK_TYPE(out.scalar_type() == at::kLong, "out must be int64, got ", out.scalar_type());
  TORCH_CHECK_VALUE(out.numel() >= 1, "out must hold at least one value");
  TORCH_CHECK_VALUE(blocks == 2 || blocks == 4 || blocks == 8 || blocks == 16,
                    "blocks must be 2, 4, 8 or 16, got ", blocks);
  TORCH_CHECK_VALUE(steps >= 1 && steps <= std::numeric_limits<int>::max(), "steps must be in [1, 2^31), got ",
                    steps);
  TORCH_CHECK(out.is_cuda(), "the cluster exchange runs on CUDA (sm_90 or newer), got ", out.device());
#ifdef PYGEN_WITH_CUDA
  cluster_exchange_cuda(out, blocks, steps);
#else
  TORCH_CHECK(false, "pygen was built without CUDA kernels");
#endif
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pygen, m) { m.def("_cluster_exchange(Tensor(a!) out, int blocks, int steps) -> ()"); }

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("_cluster_exchange", &cluster_exchange); }

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("_cluster_exchange", &cluster_exchange); }

}  // namespace pygen::ceilings
