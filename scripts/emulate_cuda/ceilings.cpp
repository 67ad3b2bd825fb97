// The cluster exchange (csrc/ceilings/cuda.cu) on CPU threads (shim.h); scripts/emulate_cuda.py
// compiles it after the kernel's code. Usage: ceilings INPUT OUTPUT. INPUT: int64 header (blocks,
// steps), one unused float64. OUTPUT: the kernel's out[0] (int64).
#include <stdexcept>

#include "driver_io.h"

namespace ce = pygen::ceilings;

struct Header {
  int64_t blocks, steps;
};

int main(int argc, char** argv) {
  if (argc != 3) throw std::runtime_error("usage: ceilings INPUT OUTPUT");
  emu::Input in(argv[1]);
  double unused;
  const Header hd = in.header<Header>(&unused);
  std::vector<int64_t> out(1, -1);
  const int64_t smem = 2 * ce::kMaxBlocks * static_cast<int64_t>(sizeof(uint32_t));  // the kernel's __shared__
  emu::launch(1, static_cast<int>(hd.blocks), ce::kThreads, smem, ce::cluster_exchange_kernel,
              static_cast<int>(hd.steps), out.data());
  std::ofstream out_file(argv[2], std::ios::binary);
  emu::write(out_file, out);
  return 0;
}
