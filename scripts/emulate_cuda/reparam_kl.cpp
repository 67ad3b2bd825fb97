// The CUDA reparameterize + KL kernels (csrc/reparam_kl/cuda.cu) on CPU threads (shim.h);
// scripts/emulate_cuda.py compiles it after the kernels' code. Usage: reparam_kl INPUT OUTPUT.
// INPUT: int64 header (see Header), one unused float64, then int64 count and float64 values of:
// mu and logvar (rows at their strides), noise (empty: the Philox stream of `seed`), grad_z and grad_kl (the backward's;
// empty: absent). OUTPUT (float64): z then kl; or (backward) the gradients' buffer: grad_mu's rows grad_stride apart
// from its start, grad_logvar's from grad_logvar_offset, NaN wherever the kernel wrote nothing.
#include <limits>

#include "driver_io.h"

namespace rk = pygen::reparam_kl;

struct Header {
  // dtype: as emu::with_dtype; vector: the kernels' aligned (vector) instantiation.
  int64_t rows, dim, samples, mu_stride, logvar_stride, grad_stride, grad_logvar_offset, seed, dtype, vector,
      backward;
};

template <typename T, bool kVector>
void run(const Header& hd, const std::vector<std::vector<double>>& arrays, std::vector<double>& out) {
  const rk::Problem p{hd.rows, hd.dim, hd.samples, hd.mu_stride, hd.logvar_stride, hd.grad_stride};
  const emu::Array<T> mu(arrays[0]), logvar(arrays[1]), noise(arrays[2]);
  const int64_t* seed = noise.data ? nullptr : &hd.seed;
  const int blocks = static_cast<int>((hd.rows + rk::kWarpsPerBlock - 1) / rk::kWarpsPerBlock);
  const size_t n = hd.rows * hd.dim, nz = n * hd.samples;
  if (hd.backward == 0) {
    emu::Array<T> z(nz);
    emu::Array<at::opmath_type<T>> kl(hd.rows);  // the KL in float32 for 16-bit inputs
    emu::launch(blocks, 1, rk::kWarpsPerBlock * 32, 0, rk::forward_kernel<T, kVector>, p, mu.data, logvar.data,
                noise.data, seed, z.data, kl.data);
    emu::append(out, z, nz);
    emu::append(out, kl, hd.rows);
    return;
  }
  const emu::Array<T> grad_z(arrays[3]);
  const emu::Array<at::opmath_type<T>> grad_kl(arrays[4]);
  // Exactly as long as the last row of grad_logvar reaches (AddressSanitizer: no write past it).
  const size_t n_grads = hd.grad_logvar_offset + (hd.rows - 1) * hd.grad_stride + hd.dim;
  emu::Array<T> grads(std::vector<double>(n_grads, std::numeric_limits<double>::quiet_NaN()));
  emu::launch(blocks, 1, rk::kWarpsPerBlock * 32, 0, rk::backward_kernel<T, kVector>, p, grad_z.data, grad_kl.data,
              mu.data, logvar.data, noise.data, seed, grads.data, grads.data + hd.grad_logvar_offset);
  emu::append(out, grads, n_grads);
}

int main(int argc, char** argv) {
  const auto count = [](const Header& hd) { return hd.backward != 0 ? 5 : 3; };
  return emu::kernel_main<Header>(argc, argv, count, [](const Header& hd, double, const auto& arrays, auto& out) {
    emu::with_dtype(hd.dtype, [&]<typename T>() {
      if (hd.vector != 0) {
        run<T, true>(hd, arrays, out);
      } else {
        run<T, false>(hd, arrays, out);
      }
    });
  });
}
