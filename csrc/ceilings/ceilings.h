// Microbenchmarks of the device's ceilings that no PyTorch op measures, for the benchmark suite
// (benchmarks/bench_copy.py): what the kernels are measured against.
#pragma once

#include <ATen/ATen.h>

namespace pygen::ceilings {

// One launch of `steps` dependent exchanges across one thread-block cluster of `blocks` blocks
// (sm_90+): per step, each block writes one value into every block's shared memory (distributed
// shared memory) and the cluster waits at its barrier, then each block sums what it received: the
// least a step of the cluster PixelCNN kernel does. out[0] (int64) gets the last sum, as uint32:
// the blocks start at rank + 1, so it is B (B + 1) / 2 * B^(steps - 1) mod 2^32.
void cluster_exchange_cuda(at::Tensor& out, int64_t blocks, int64_t steps);

}  // namespace pygen::ceilings
