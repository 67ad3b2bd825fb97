// The cluster exchange (csrc/ceilings/cuda.cu) on CPU threads (shim.h); scripts/emulate_cuda.py
// compiles it after the kernel's code. Usage: ceilings INPUT OUTPUT. INPUT: int64 header (blocks,
// steps), one unused float64. OUTPUT (float64): the kernel's out[0].
#include "driver_io.h"

namespace ce = pygen::ceilings;

struct Header {
  int64_t blocks, steps;
};

int main(int argc, char** argv) {
  const auto count = [](const Header&) { return 0; };
  return emu::kernel_main<Header>(argc, argv, count, [](const Header& hd, double, const auto&, auto& out) {
    int64_t sum = -1;
    const int64_t smem = 2 * ce::kMaxBlocks * static_cast<int64_t>(sizeof(uint32_t));  // the kernel's __shared__
    emu::launch(1, static_cast<int>(hd.blocks), ce::kThreads, smem, ce::cluster_exchange_kernel,
                static_cast<int>(hd.steps), &sum);
    out.push_back(static_cast<double>(sum));
  });
}
