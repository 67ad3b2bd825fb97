// CUDA kernels of the MADE solve (algorithm: cpu.cpp, whose steps they run in the same order). One
// block per tile of kTile samples runs all D steps in one launch. Forward: each dot (a hidden unit
// of the step's degree, or one of the two outputs of input order[m]) belongs to one warp, whose
// lanes split the span of the row that holds values at that step for every sample of the tile at
// once, then a butterfly reduction; barriers separate the layers. Backward (the sequential part,
// made_solve.h): the steps backwards, each gradient spread over the span below by one thread per
// entry, summing the step's rows in the CPU kernel's order. The tile's values (forward) or their
// gradients (backward) live in a zero-initialised global scratch. No atomics: the same result on
// every run.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "common/math.h"
#include "made_solve/made_solve.h"

namespace pygen::made_solve {
namespace {

using affine_coupling::ScaleFn;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 8;  // samples per block: one accumulator each per lane

template <typename scalar_t, typename acc_t>
struct Args {
  const acc_t* const* w;  // device table: weights[0 .. L), then biases[0 .. L)
  // units (hidden), then D each: bounds, order, filled (lo, hi pairs: 2 D), computed (2 D), keep.
  const int64_t* meta;
  const scalar_t* target;  // (rows, dim)
  acc_t* scratch;  // per tile: inputs (kTile, dim), activations (L - 1, kTile, hidden), or their gradients
  int64_t rows;
  int dim, hidden, layers;
  acc_t clamp, inv_clamp;
  bool reverse;
  // The forward's outputs.
  scalar_t* x;       // (rows, dim)
  scalar_t* params;  // (rows, 2, dim)
  // The backward's inputs (made_solve.h; grad_x and grad_params may be null) and outputs.
  const scalar_t *grad_x, *grad_params, *params_in;
  const acc_t* acts;  // (L - 1, rows, hidden)
  scalar_t* grad_target;
  acc_t *g_units, *g_out;  // (L - 1, rows, hidden), (rows, 2 dim)
};

// sums[r] = sum_{j < k} w[j] * a[r * lda + j] for the kTile rows of a, in every lane of the warp.
template <typename acc_t>
__device__ __forceinline__ void warp_dot_rows(const acc_t* w, const acc_t* a, int64_t lda, int64_t k,
                                              acc_t (&sums)[kTile]) {
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < kTile; ++r) sums[r] = acc_t(0);
  for (int64_t j = lane; j < k; j += 32) {
    const acc_t wj = w[j];
#pragma unroll
    for (int r = 0; r < kTile; ++r) sums[r] += wj * a[r * lda + j];
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1)
#pragma unroll
    for (int r = 0; r < kTile; ++r) sums[r] += __shfl_xor_sync(0xffffffffu, sums[r], off);
}

// sums[lane] for lane < kTile, without indexing registers by a variable.
template <typename acc_t>
__device__ __forceinline__ acc_t row_of_lane(const acc_t (&sums)[kTile]) {
  const int lane = threadIdx.x & 31;
  acc_t v = sums[0];
#pragma unroll
  for (int r = 1; r < kTile; ++r)
    if (r == lane) v = sums[r];
  return v;
}

// A block's view of the table (Args::meta) and of its tile's state in the scratch: the inputs
// (kTile, dim), then every hidden layer (kTile, hidden); values (forward) or their gradients.
template <typename scalar_t, typename acc_t>
struct Tile {
  const int64_t *units, *bounds, *order, *filled, *computed, *keep;
  acc_t* in;
  int64_t n0;  // the tile's first sample
  int dim, hidden, rows;

  __device__ explicit Tile(const Args<scalar_t, acc_t>& p)
      : units(p.meta), bounds(units + p.hidden), order(bounds + p.dim), filled(order + p.dim),
        computed(filled + 2 * p.dim), keep(computed + 2 * p.dim),
        in(p.scratch + static_cast<int64_t>(blockIdx.x) * kTile * (p.dim + static_cast<int64_t>(p.layers - 1) * p.hidden)),
        n0(static_cast<int64_t>(blockIdx.x) * kTile), dim(p.dim), hidden(p.hidden),
        rows(static_cast<int>(min(static_cast<int64_t>(kTile), p.rows - n0))) {}

  __device__ acc_t* layer(int i) const { return in + kTile * dim + static_cast<int64_t>(i) * kTile * hidden; }
  __device__ acc_t* below(int i) const { return i == 0 ? in : layer(i - 1); }
  // What of layer i's inputs holds values at step m (after the units of degree m): [lo, hi).
  __device__ const int64_t* span(int i, int m) const { return i == 0 ? filled + 2 * m : computed + 2 * m; }
};

template <ScaleFn F, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) solve_kernel(Args<scalar_t, acc_t> p) {
  __shared__ acc_t outputs[2][kTile];  // the step's log-scales and shifts
  const Tile tile(p);
  const int dim = p.dim, hidden = p.hidden, last = p.layers - 1, rows = tile.rows;
  const int t = threadIdx.x, warp = t >> 5, lane = t & 31;
  const int64_t n0 = tile.n0;
  const acc_t* const* w = p.w;
  const acc_t* const* b = p.w + p.layers;
  const int64_t *units = tile.units, *bounds = tile.bounds, *order = tile.order, *keep = tile.keep;
  acc_t* in = tile.in;
  acc_t sums[kTile];
  for (int m = 0; m < dim; ++m) {
    // The hidden units of degree m > 0, layer by layer: every input they see is filled.
    if (m > 0 && bounds[m] > bounds[m - 1]) {
      for (int i = 0; i < last; ++i) {
        const int64_t k = i == 0 ? dim : hidden, lo = tile.span(i, m)[0], hi = tile.span(i, m)[1];
        for (int64_t j = bounds[m - 1] + warp; j < bounds[m]; j += kWarps) {
          const int64_t u = units[j];
          warp_dot_rows(w[i] + u * k + lo, tile.below(i) + lo, k, hi - lo, sums);
          if (lane < kTile) tile.layer(i)[lane * hidden + u] = relu(row_of_lane(sums) + b[i][u]);
        }
        __syncthreads();
      }
    }
    // Input d's log-scale and shift (warps 0 and 1), rounded to the target's dtype as the op
    // returns them, then its value.
    const int64_t d = order[m], lo = tile.span(last, m)[0], hi = tile.span(last, m)[1];
    if (warp < 2) {
      warp_dot_rows(w[last] + (warp * dim + d) * hidden + lo, tile.below(last) + lo, hidden, hi - lo, sums);
      if (lane < kTile) outputs[warp][lane] = row_of_lane(sums);
    }
    __syncthreads();
    if (t < rows) {
      const int64_t n = n0 + t;
      const scalar_t log_scale = static_cast<scalar_t>(outputs[0][t] + b[last][d]);
      const scalar_t shift = static_cast<scalar_t>(outputs[1][t] + b[last][dim + d]);
      p.params[n * 2 * dim + d] = log_scale;
      p.params[n * 2 * dim + dim + d] = shift;
      const scalar_t target = p.target[n * dim + d];
      const acc_t s = affine_coupling::scale_log<F>(static_cast<acc_t>(log_scale), p.clamp, p.inv_clamp);
      const acc_t out = affine_coupling::coupled<F>(static_cast<acc_t>(target), s, static_cast<acc_t>(shift), p.reverse);
      const scalar_t y = keep[d] != 0 ? target : static_cast<scalar_t>(out);
      p.x[n * dim + d] = y;
      in[t * dim + d] = static_cast<acc_t>(y);
    }
    __syncthreads();
  }
}

// g[r * ld + j] += sum_q grad_of(q, r) * row_of(q)[j] for j in [lo, hi), q < n and the tile's
// rows r, one thread per j, adding the rows q in order as the CPU kernel does (spread_rows).
template <typename acc_t, typename RowOf, typename GradOf>
__device__ __forceinline__ void spread(acc_t* g, int64_t ld, int64_t lo, int64_t hi, int rows, int64_t n,
                                       RowOf&& row_of, GradOf&& grad_of) {
  for (int64_t j = lo + threadIdx.x; j < hi; j += kThreads) {
    acc_t v[kTile];
#pragma unroll
    for (int r = 0; r < kTile; ++r) v[r] = g[r * ld + j];
    for (int64_t q = 0; q < n; ++q) {
      const acc_t wj = row_of(q)[j];
#pragma unroll
      for (int r = 0; r < kTile; ++r) {
        if (r < rows) v[r] += grad_of(q, r) * wj;
      }
    }
#pragma unroll
    for (int r = 0; r < kTile; ++r) g[r * ld + j] = v[r];
  }
}

template <ScaleFn F, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) solve_backward_kernel(Args<scalar_t, acc_t> p) {
  const Tile tile(p);  // its state (tile.in, tile.layer): the gradients of the tile's values
  const int dim = p.dim, hidden = p.hidden, last = p.layers - 1, rows = tile.rows, t = threadIdx.x;
  const int64_t n0 = tile.n0, two_dim = 2 * static_cast<int64_t>(dim);
  const acc_t* const* w = p.w;
  const int64_t *units = tile.units, *bounds = tile.bounds, *order = tile.order, *keep = tile.keep;
  acc_t* g_in = tile.in;
  if (p.grad_x != nullptr) {
    for (int64_t e = t; e < static_cast<int64_t>(rows) * dim; e += kThreads)
      g_in[e] = static_cast<acc_t>(p.grad_x[n0 * dim + e]);
  }
  __syncthreads();
  for (int m = dim - 1; m >= 0; --m) {
    // Input d: the affine map (thread r for sample r), then the two output rows.
    const int64_t d = order[m];
    if (t < rows) {
      const int64_t n = n0 + t;
      const acc_t g = g_in[t * dim + d];
      const acc_t a = static_cast<acc_t>(p.params_in[n * two_dim + d]);
      const acc_t shift = static_cast<acc_t>(p.params_in[n * two_dim + dim + d]);
      acc_t gs = p.grad_params != nullptr ? static_cast<acc_t>(p.grad_params[n * two_dim + d]) : acc_t(0);
      acc_t gt = p.grad_params != nullptr ? static_cast<acc_t>(p.grad_params[n * two_dim + dim + d]) : acc_t(0);
      acc_t g_target = g;
      if (keep[d] == 0) {
        const acc_t sv = affine_coupling::scale_log<F>(a, p.clamp, p.inv_clamp);
        const auto dy = affine_coupling::coupled_grads<F>(g, static_cast<acc_t>(p.target[n * dim + d]), sv, shift,
                                                          p.reverse);
        g_target = dy.x;
        gs += dy.s * affine_coupling::scale_grad<F>(a, sv, p.inv_clamp);
        gt += dy.t;
      }
      p.grad_target[n * dim + d] = static_cast<scalar_t>(g_target);
      p.g_out[n * two_dim + d] = gs;
      p.g_out[n * two_dim + dim + d] = gt;
    }
    __syncthreads();
    const acc_t* g_out = p.g_out + n0 * two_dim + d;
    spread(
        tile.below(last), hidden, tile.span(last, m)[0], tile.span(last, m)[1], rows, 2,
        [&](int64_t q) { return w[last] + (q * dim + d) * hidden; },
        [&](int64_t q, int r) { return g_out[r * two_dim + q * dim]; });
    __syncthreads();
    // The units of degree m, from the top layer down (a ReLU passes where the unit is positive).
    for (int i = last - 1; m > 0 && i >= 0 && bounds[m] > bounds[m - 1]; --i) {
      const int64_t k = i == 0 ? dim : hidden, u0 = bounds[m - 1], n_units = bounds[m] - u0;
      acc_t* g_units = p.g_units + (static_cast<int64_t>(i) * p.rows + n0) * hidden;
      const acc_t* acts = p.acts + (static_cast<int64_t>(i) * p.rows + n0) * hidden;
      for (int64_t e = t; e < n_units * rows; e += kThreads) {
        const int64_t u = units[u0 + e / rows], r = e % rows;
        g_units[r * hidden + u] = acts[r * hidden + u] > 0 ? tile.layer(i)[r * hidden + u] : acc_t(0);
      }
      __syncthreads();
      spread(
          tile.below(i), k, tile.span(i, m)[0], tile.span(i, m)[1], rows, n_units,
          [&](int64_t q) { return w[i] + units[u0 + q] * k; },
          [&](int64_t q, int r) { return g_units[r * hidden + units[u0 + q]]; });
      __syncthreads();
    }
  }
}

// What both kernels read beside their arguments, on the target's device: the int64 table
// (Args::meta: units, bounds, order, the filled and computed spans, keep), the weights' then the
// biases' addresses, and a zeroed scratch of one tile's state per block.
struct Launch {
  at::Tensor meta, table, scratch;
  unsigned tiles;
  int layers;

  Launch(const Solve& s, const at::Device device) {
    std::vector<int64_t> values(s.units);
    values.insert(values.end(), s.bounds.begin(), s.bounds.end());
    values.insert(values.end(), s.order.begin(), s.order.end());
    for (const auto* spans : {&s.filled, &s.computed}) {
      for (const Span& span : *spans) {
        values.push_back(span.lo);
        values.push_back(span.hi);
      }
    }
    values.insert(values.end(), s.keep.begin(), s.keep.end());
    std::vector<int64_t> addresses;
    for (const auto* list : {&s.weights, &s.biases}) {
      for (const auto& t : *list) addresses.push_back(reinterpret_cast<int64_t>(t.const_data_ptr()));
    }
    const auto long_opts = at::TensorOptions().dtype(at::kLong);
    meta = at::tensor(values, long_opts).to(device);
    table = at::tensor(addresses, long_opts).to(device);
    layers = static_cast<int>(s.weights.size());
    const int64_t n_tiles = (s.rows + kTile - 1) / kTile;
    tiles = static_cast<unsigned>(n_tiles);
    scratch = at::zeros({n_tiles, kTile * (s.dim + (layers - 1) * s.hidden)}, s.weights[0].options());
  }

  // The arguments both kernels read, the outputs and the backward's inputs null.
  template <typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
  Args<scalar_t, acc_t> args(const Solve& s, const at::Tensor& target) const {
    Args<scalar_t, acc_t> a{};
    a.w = reinterpret_cast<const acc_t* const*>(table.const_data_ptr<int64_t>());
    a.meta = meta.const_data_ptr<int64_t>();
    a.target = target.const_data_ptr<scalar_t>();
    a.scratch = scratch.mutable_data_ptr<acc_t>();
    a.rows = s.rows;
    a.dim = static_cast<int>(s.dim);
    a.hidden = static_cast<int>(s.hidden);
    a.layers = layers;
    a.clamp = static_cast<acc_t>(s.clamp);
    a.inv_clamp = s.clamp > 0 ? acc_t(1) / a.clamp : acc_t(0);
    a.reverse = s.reverse;
    return a;
  }

  // kernel_of(f), the kernel for scale function f, over the tiles.
  template <typename Args, typename KernelOf>
  void run(const Solve& s, const Args& args, KernelOf&& kernel_of) const {
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      kernel_of(f)<<<tiles, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
};

}  // namespace

void solve_cuda(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params) {
  const c10::cuda::CUDAGuard guard(target.device());
  const Launch launch(s, target.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_cuda", [&] {
    auto args = launch.args<scalar_t>(s, target);
    args.x = x.mutable_data_ptr<scalar_t>();
    args.params = params.mutable_data_ptr<scalar_t>();
    launch.run(s, args, [](auto f) { return solve_kernel<decltype(f)::value, scalar_t, at::opmath_type<scalar_t>>; });
  });
}

void solve_backward_cuda(const Solve& s, const at::Tensor& grad_x, const at::Tensor& grad_params,
                         const at::Tensor& target, const at::Tensor& params, const at::Tensor& acts,
                         at::Tensor& grad_target, at::Tensor& g_units, at::Tensor& g_out) {
  const c10::cuda::CUDAGuard guard(target.device());
  const Launch launch(s, target.device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto data = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    auto args = launch.args<scalar_t>(s, target);
    args.grad_x = data(grad_x);
    args.grad_params = data(grad_params);
    args.params_in = params.const_data_ptr<scalar_t>();
    args.acts = acts.const_data_ptr<acc_t>();
    args.grad_target = grad_target.mutable_data_ptr<scalar_t>();
    args.g_units = g_units.mutable_data_ptr<acc_t>();
    args.g_out = g_out.mutable_data_ptr<acc_t>();
    launch.run(s, args, [](auto f) { return solve_backward_kernel<decltype(f)::value, scalar_t, acc_t>; });
  });
}

}  // namespace pygen::made_solve
