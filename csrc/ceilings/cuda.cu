// The cluster exchange (ceilings.h): one cluster, one launch, the steps in a loop.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>

#include <cstdint>

#include "ceilings/ceilings.h"

namespace pygen::ceilings {
namespace {

constexpr int kThreads = 256;  // as the PixelCNN cluster kernel's blocks
constexpr int kMaxBlocks = 16;

__global__ void __launch_bounds__(kThreads, 1) cluster_exchange_kernel(int steps, int64_t* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  // Two sets of slots: a step's stores never meet another block's reads of the step before (the
  // barrier between them has passed every block's reads of two steps before).
  __shared__ uint32_t slots[2][kMaxBlocks];
  const unsigned blocks = cluster.num_blocks(), rank = cluster.block_rank();
  uint32_t value = rank + 1;
  cluster.sync();  // every block runs before any stores into it
  for (int step = 0; step < steps; ++step) {
    uint32_t* slot = slots[step % 2];
    if (threadIdx.x < blocks) *cluster.map_shared_rank(slot + rank, threadIdx.x) = value;
    cluster.sync();
    uint32_t sum = 0;
    for (unsigned r = 0; r < blocks; ++r) sum += slot[r];
    value = sum;
  }
  if (rank == 0 && threadIdx.x == 0) *out = value;
#endif
}

}  // namespace

void cluster_exchange_cuda(at::Tensor& out, int64_t blocks, int64_t steps) {
  const c10::cuda::CUDAGuard guard(out.device());
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, out.get_device()));
  TORCH_CHECK(major >= 9, "the cluster exchange needs sm_90 or newer, this GPU is sm_", major, "x");
  if (blocks > 8) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(cluster_exchange_kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  }
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(blocks));
  config.blockDim = dim3(kThreads);
  config.stream = c10::cuda::getCurrentCUDAStream();
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = static_cast<unsigned>(blocks);
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  config.attrs = &attr;
  config.numAttrs = 1;
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, cluster_exchange_kernel, static_cast<int>(steps),
                                    out.mutable_data_ptr<int64_t>()));
}

}  // namespace pygen::ceilings
