// The CUDA affine coupling kernels (csrc/affine_coupling/cuda.cu) on CPU threads (shim.h);
// scripts/emulate_cuda.py compiles it after the kernels' code. Usage: affine_coupling INPUT OUTPUT.
// INPUT: int64 header (see Header: the kernels' Problem as the op makes it), float64 clamp, then
// int64 count and float64 values of: x, log_scale (empty: the additive coupling; rows at its
// stride, in runs), shift (likewise), the uint8 mask (empty unless read), and for the backward
// grad_y and grad_logdet.
// OUTPUT (float64): y then logdet; or (backward) grad_x, grad_log_scale (if any) and grad_shift,
// these two with rows param_grad_stride apart, in runs, and NaN wherever the kernel wrote nothing.
#include "driver_io.h"

namespace ac = pygen::affine_coupling;

struct Header {
  int64_t rows, row_len, scale_fn, reverse, mask_kind, parity, width, height, split, mask_row_stride;
  int64_t log_scale_stride, shift_stride, param_grad_stride, param_run, param_run_stride;
  int64_t dtype, vector, backward;  // dtype: as emu::with_dtype
};

template <typename T, ac::ScaleFn F>
void run(const Header& hd, double clamp, const std::vector<std::vector<double>>& arrays, std::vector<double>& out) {
  using acc_t = at::opmath_type<T>;
  const ac::Problem p{hd.rows,   hd.row_len,         F,
                      clamp,     hd.reverse != 0,    ac::MaskKind(hd.mask_kind),
                      hd.parity, hd.width,           hd.height,
                      hd.split,  hd.mask_row_stride, hd.log_scale_stride,
                      hd.shift_stride, hd.param_grad_stride, hd.param_run,
                      hd.param_run_stride};
  const ac::Segments seg = ac::segments(p);
  const int blocks = static_cast<int>(ac::grid(p, seg).x), threads = ac::kWarpsPerBlock * 32;
  const bool vector = hd.vector != 0;
  const emu::Array<T> x(arrays[0]), log_scale(arrays[1]), shift(arrays[2]);
  const emu::Array<uint8_t> mask(arrays[3]);
  const size_t n = hd.rows * hd.row_len;
  if (hd.backward == 0) {
    emu::Array<T> y(n);
    emu::Array<acc_t> partial(hd.rows * seg.per_row), logdet(hd.rows);
    emu::launch(blocks, 1, threads, 0, ac::forward_kernel<T, F>, p, seg, vector, x.data, log_scale.data, shift.data,
                mask.data, y.data, partial.data);
    for (int64_t r = 0; r < hd.rows; ++r) {  // the host's sum over a sample's segments
      logdet.data[r] = 0;
      for (int64_t k = 0; k < seg.per_row; ++k) logdet.data[r] += partial.data[r * seg.per_row + k];
    }
    emu::append(out, y, n);
    emu::append(out, logdet, hd.rows);
    return;
  }
  const emu::Array<T> grad_y(arrays[4]);
  const emu::Array<acc_t> grad_logdet(arrays[5]);
  const size_t n_params = hd.rows * hd.param_grad_stride;
  const std::vector<double> gaps(n_params, std::numeric_limits<double>::quiet_NaN());
  emu::Array<T> grad_x(n), grad_log_scale(log_scale.data ? gaps : std::vector<double>()), grad_shift(gaps);
  emu::launch(blocks, 1, threads, 0, ac::backward_kernel<T, F>, p, seg, vector, grad_y.data, grad_logdet.data, x.data,
              log_scale.data, shift.data, mask.data, grad_x.data, grad_log_scale.data, grad_shift.data);
  emu::append(out, grad_x, n);
  if (log_scale.data) emu::append(out, grad_log_scale, n_params);
  emu::append(out, grad_shift, n_params);
}

int main(int argc, char** argv) {
  const auto count = [](const Header& hd) { return hd.backward != 0 ? 6 : 4; };
  return emu::kernel_main<Header>(argc, argv, count, [](const Header& hd, double clamp, const auto& arrays, auto& out) {
    emu::with_dtype(hd.dtype, [&]<typename T>() {
      ac::with_scale_fn(static_cast<ac::ScaleFn>(hd.scale_fn),
                        [&](auto f) { run<T, decltype(f)::value>(hd, clamp, arrays, out); });
    });
  });
}
