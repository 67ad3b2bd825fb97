// The CUDA MADE solve (csrc/made_solve/cuda.cu) over its kernels emulated on CPU threads (shim.h);
// scripts/emulate_cuda.py compiles it after the kernels' code. Usage: made_solve INPUT OUTPUT.
// INPUT: int64 header (see Header), float64 clamp (0 for the unclamped scale functions), then
// int64 count and float64 values of: each layer's masked weight, each bias, the kernels' int64
// table (units, bounds, order, filled and computed spans, keep: see Args in cuda.cu), the target;
// for the backward then grad_x, grad_params, params and the activations (L - 1, rows, hidden).
// OUTPUT (float64): x then params; or (backward) grad_target, g_units and g_out (made_solve.h).
#include "driver_io.h"

namespace ms = pygen::made_solve;

struct Header {
  int64_t rows, dim, hidden, layers, scale_fn, reverse, dtype, backward;  // dtype: as emu::with_dtype
};

template <typename scalar_t>
void run(const Header& hd, double clamp, const std::vector<std::vector<double>>& arrays,
         std::vector<double>& out) {
  using acc_t = at::opmath_type<scalar_t>;
  std::vector<std::vector<acc_t>> params_in;  // weights, then biases
  for (int64_t i = 0; i < 2 * hd.layers; ++i) params_in.emplace_back(arrays[i].begin(), arrays[i].end());
  std::vector<const acc_t*> table;
  for (const auto& v : params_in) table.push_back(v.data());
  const std::vector<int64_t> meta(arrays[2 * hd.layers].begin(), arrays[2 * hd.layers].end());
  const std::vector<scalar_t> target(arrays[2 * hd.layers + 1].begin(), arrays[2 * hd.layers + 1].end());
  const int64_t tiles = (hd.rows + ms::kTile - 1) / ms::kTile;
  std::vector<acc_t> scratch(tiles * ms::kTile * (hd.dim + (hd.layers - 1) * hd.hidden), acc_t(0));
  std::vector<scalar_t> x(hd.rows * hd.dim), params(hd.rows * 2 * hd.dim);
  ms::Args<scalar_t, acc_t> args{};  // as Launch::args in cuda.cu
  args.w = table.data();
  args.meta = meta.data();
  args.target = target.data();
  args.scratch = scratch.data();
  args.rows = hd.rows;
  args.dim = static_cast<int>(hd.dim);
  args.hidden = static_cast<int>(hd.hidden);
  args.layers = static_cast<int>(hd.layers);
  args.clamp = static_cast<acc_t>(clamp);
  args.inv_clamp = clamp > 0 ? acc_t(1) / args.clamp : acc_t(0);
  args.reverse = hd.reverse != 0;
  const auto scale_fn = static_cast<pygen::affine_coupling::ScaleFn>(hd.scale_fn);
  if (hd.backward != 0) {
    const auto& a = arrays;
    const int64_t at = 2 * hd.layers + 2;
    const std::vector<scalar_t> grad_x(a[at].begin(), a[at].end()), grad_params(a[at + 1].begin(), a[at + 1].end());
    const std::vector<scalar_t> params_in(a[at + 2].begin(), a[at + 2].end());
    const std::vector<acc_t> acts(a[at + 3].begin(), a[at + 3].end());
    std::vector<scalar_t> grad_target(hd.rows * hd.dim);
    std::vector<acc_t> g_units(acts.size(), acc_t(0)), g_out(hd.rows * 2 * hd.dim, acc_t(0));
    args.grad_x = grad_x.data();
    args.grad_params = grad_params.data();
    args.params_in = params_in.data();
    args.acts = acts.data();
    args.grad_target = grad_target.data();
    args.g_units = g_units.data();
    args.g_out = g_out.data();
    pygen::affine_coupling::with_scale_fn(scale_fn, [&](auto f) {
      emu::launch(tiles, 1, ms::kThreads, 0, ms::solve_backward_kernel<decltype(f)::value, scalar_t, acc_t>, args);
    });
    for (const auto& v : grad_target) out.push_back(static_cast<double>(v));
    for (const auto& v : g_units) out.push_back(static_cast<double>(v));
    for (const auto& v : g_out) out.push_back(static_cast<double>(v));
    return;
  }
  args.x = x.data();
  args.params = params.data();
  const int64_t smem = 2 * ms::kTile * static_cast<int64_t>(sizeof(acc_t));  // the kernel's __shared__
  pygen::affine_coupling::with_scale_fn(scale_fn, [&](auto f) {
    emu::launch(tiles, 1, ms::kThreads, smem, ms::solve_kernel<decltype(f)::value, scalar_t, acc_t>, args);
  });
  for (const auto& v : x) out.push_back(static_cast<double>(v));
  for (const auto& v : params) out.push_back(static_cast<double>(v));
}

int main(int argc, char** argv) {
  const auto count = [](const Header& hd) { return 2 * hd.layers + (hd.backward != 0 ? 6 : 2); };
  return emu::kernel_main<Header>(argc, argv, count, [](const Header& hd, double clamp, const auto& arrays, auto& out) {
    emu::with_dtype(hd.dtype, [&]<typename T>() { run<T>(hd, clamp, arrays, out); });
  });
}
