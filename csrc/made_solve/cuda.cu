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
  scalar_t* x;             // (rows, dim)
  scalar_t* params;        // (rows, 2, dim)
  acc_t* scratch;          // per tile: inputs (kTile, dim), activations (L - 1, kTile, hidden)
  int64_t rows;
  int dim, hidden, layers;
  acc_t clamp, inv_clamp;
  bool reverse;
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

template <ScaleFn F, typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads) solve_kernel(Args<scalar_t, acc_t> p) {
  __shared__ acc_t outputs[2][kTile];  // the step's log-scales and shifts
  const int dim = p.dim, hidden = p.hidden, last = p.layers - 1;
  const int t = threadIdx.x, warp = t >> 5, lane = t & 31;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTile), p.rows - n0));
  const acc_t* const* w = p.w;
  const acc_t* const* b = p.w + p.layers;
  const int64_t* units = p.meta;
  const int64_t* bounds = units + hidden;
  const int64_t* order = bounds + dim;
  const int64_t* filled = order + dim;
  const int64_t* computed = filled + 2 * dim;
  const int64_t* keep = computed + 2 * dim;
  acc_t* in = p.scratch + static_cast<int64_t>(blockIdx.x) * kTile * (dim + static_cast<int64_t>(last) * hidden);
  auto layer = [&](int i) { return in + kTile * dim + static_cast<int64_t>(i) * kTile * hidden; };
  auto below = [&](int i) { return i == 0 ? in : layer(i - 1); };
  // What of layer i's inputs holds values at step m (after the units of degree m).
  auto span = [&](int i, int m) { return i == 0 ? filled + 2 * m : computed + 2 * m; };
  acc_t sums[kTile];
  for (int m = 0; m < dim; ++m) {
    // The hidden units of degree m > 0, layer by layer: every input they see is filled.
    if (m > 0 && bounds[m] > bounds[m - 1]) {
      for (int i = 0; i < last; ++i) {
        const int64_t k = i == 0 ? dim : hidden, lo = span(i, m)[0], hi = span(i, m)[1];
        for (int64_t j = bounds[m - 1] + warp; j < bounds[m]; j += kWarps) {
          const int64_t u = units[j];
          warp_dot_rows(w[i] + u * k + lo, below(i) + lo, k, hi - lo, sums);
          if (lane < kTile) layer(i)[lane * hidden + u] = max(row_of_lane(sums) + b[i][u], acc_t(0));
        }
        __syncthreads();
      }
    }
    // Input d's log-scale and shift (warps 0 and 1), rounded to the target's dtype as the op
    // returns them, then its value.
    const int64_t d = order[m], lo = span(last, m)[0], hi = span(last, m)[1];
    if (warp < 2) {
      warp_dot_rows(w[last] + (warp * dim + d) * hidden + lo, below(last) + lo, hidden, hi - lo, sums);
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

template <typename scalar_t, typename acc_t>
struct BackwardArgs {
  const acc_t* const* w;  // device table: weights[0 .. L)
  const int64_t* meta;    // as Args::meta
  const scalar_t* grad_x;       // (rows, dim) or null
  const scalar_t* grad_params;  // (rows, 2, dim) or null
  const scalar_t* target;       // (rows, dim)
  const scalar_t* params;       // (rows, 2, dim)
  const acc_t* acts;            // (L - 1, rows, hidden)
  scalar_t* grad_target;        // (rows, dim)
  acc_t* g_units;               // (L - 1, rows, hidden)
  acc_t* g_out;                 // (rows, 2 dim)
  acc_t* scratch;               // per tile: gradients of the inputs (kTile, dim), activations (L - 1, kTile, hidden)
  int64_t rows;
  int dim, hidden, layers;
  acc_t clamp, inv_clamp;
  bool reverse;
};

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
__global__ void __launch_bounds__(kThreads) solve_backward_kernel(BackwardArgs<scalar_t, acc_t> p) {
  const int dim = p.dim, hidden = p.hidden, last = p.layers - 1, t = threadIdx.x;
  const int64_t n0 = static_cast<int64_t>(blockIdx.x) * kTile, two_dim = 2 * static_cast<int64_t>(dim);
  const int rows = static_cast<int>(min(static_cast<int64_t>(kTile), p.rows - n0));
  const acc_t* const* w = p.w;
  const int64_t* units = p.meta;
  const int64_t* bounds = units + hidden;
  const int64_t* order = bounds + dim;
  const int64_t* filled = order + dim;
  const int64_t* computed = filled + 2 * dim;
  const int64_t* keep = computed + 2 * dim;
  acc_t* g_in = p.scratch + static_cast<int64_t>(blockIdx.x) * kTile * (dim + static_cast<int64_t>(last) * hidden);
  auto g_layer = [&](int i) { return g_in + kTile * dim + static_cast<int64_t>(i) * kTile * hidden; };
  auto g_below = [&](int i) { return i == 0 ? g_in : g_layer(i - 1); };
  auto span = [&](int i, int m) { return i == 0 ? filled + 2 * m : computed + 2 * m; };
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
      const acc_t a = static_cast<acc_t>(p.params[n * two_dim + d]);
      const acc_t shift = static_cast<acc_t>(p.params[n * two_dim + dim + d]);
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
        g_below(last), hidden, span(last, m)[0], span(last, m)[1], rows, 2,
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
        g_units[r * hidden + u] = acts[r * hidden + u] > 0 ? g_layer(i)[r * hidden + u] : acc_t(0);
      }
      __syncthreads();
      spread(
          g_below(i), k, span(i, m)[0], span(i, m)[1], rows, n_units,
          [&](int64_t q) { return w[i] + units[u0 + q] * k; },
          [&](int64_t q, int r) { return g_units[r * hidden + units[u0 + q]]; });
      __syncthreads();
    }
  }
}

// The kernels' int64 table (Args::meta): units, bounds, order, the filled and computed spans, keep.
std::vector<int64_t> meta_of(const Solve& s) {
  std::vector<int64_t> meta(s.units);
  meta.insert(meta.end(), s.bounds.begin(), s.bounds.end());
  meta.insert(meta.end(), s.order.begin(), s.order.end());
  for (const auto* spans : {&s.filled, &s.computed}) {
    for (const Span& span : *spans) {
      meta.push_back(span.lo);
      meta.push_back(span.hi);
    }
  }
  meta.insert(meta.end(), s.keep.begin(), s.keep.end());
  return meta;
}

}  // namespace

void solve_cuda(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params) {
  const c10::cuda::CUDAGuard guard(target.device());
  const auto device = target.device();
  const auto layers = static_cast<int64_t>(s.weights.size());
  std::vector<int64_t> addresses;
  for (const auto* list : {&s.weights, &s.biases}) {
    for (const auto& t : *list) addresses.push_back(reinterpret_cast<int64_t>(t.const_data_ptr()));
  }
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  const at::Tensor meta_d = at::tensor(meta_of(s), long_opts).to(device);
  const at::Tensor table = at::tensor(addresses, long_opts).to(device);
  const int64_t tiles = (s.rows + kTile - 1) / kTile;
  const at::Tensor scratch =
      at::zeros({tiles, kTile * (s.dim + (layers - 1) * s.hidden)}, s.weights[0].options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t c = static_cast<acc_t>(s.clamp), ic = s.clamp > 0 ? acc_t(1) / c : acc_t(0);
    const Args<scalar_t, acc_t> args{reinterpret_cast<const acc_t* const*>(table.const_data_ptr<int64_t>()),
                                     meta_d.const_data_ptr<int64_t>(),
                                     target.const_data_ptr<scalar_t>(),
                                     x.mutable_data_ptr<scalar_t>(),
                                     params.mutable_data_ptr<scalar_t>(),
                                     scratch.mutable_data_ptr<acc_t>(),
                                     s.rows,
                                     static_cast<int>(s.dim),
                                     static_cast<int>(s.hidden),
                                     static_cast<int>(layers),
                                     c,
                                     ic,
                                     s.reverse};
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      solve_kernel<decltype(f)::value, scalar_t, acc_t>
          <<<static_cast<unsigned>(tiles), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void solve_backward_cuda(const Solve& s, const at::Tensor& grad_x, const at::Tensor& grad_params,
                         const at::Tensor& target, const at::Tensor& params, const at::Tensor& acts,
                         at::Tensor& grad_target, at::Tensor& g_units, at::Tensor& g_out) {
  const c10::cuda::CUDAGuard guard(target.device());
  const auto device = target.device();
  const auto layers = static_cast<int64_t>(s.weights.size());
  const auto long_opts = at::TensorOptions().dtype(at::kLong);
  std::vector<int64_t> addresses;
  for (const auto& t : s.weights) addresses.push_back(reinterpret_cast<int64_t>(t.const_data_ptr()));
  const at::Tensor meta_d = at::tensor(meta_of(s), long_opts).to(device);
  const at::Tensor table = at::tensor(addresses, long_opts).to(device);
  const int64_t tiles = (s.rows + kTile - 1) / kTile;
  const at::Tensor scratch =
      at::zeros({tiles, kTile * (s.dim + (layers - 1) * s.hidden)}, s.weights[0].options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t c = static_cast<acc_t>(s.clamp), ic = s.clamp > 0 ? acc_t(1) / c : acc_t(0);
    const auto data = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    const BackwardArgs<scalar_t, acc_t> args{reinterpret_cast<const acc_t* const*>(table.const_data_ptr<int64_t>()),
                                             meta_d.const_data_ptr<int64_t>(),
                                             data(grad_x),
                                             data(grad_params),
                                             target.const_data_ptr<scalar_t>(),
                                             params.const_data_ptr<scalar_t>(),
                                             acts.const_data_ptr<acc_t>(),
                                             grad_target.mutable_data_ptr<scalar_t>(),
                                             g_units.mutable_data_ptr<acc_t>(),
                                             g_out.mutable_data_ptr<acc_t>(),
                                             scratch.mutable_data_ptr<acc_t>(),
                                             s.rows,
                                             static_cast<int>(s.dim),
                                             static_cast<int>(s.hidden),
                                             static_cast<int>(layers),
                                             c,
                                             ic,
                                             s.reverse};
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      solve_backward_kernel<decltype(f)::value, scalar_t, acc_t>
          <<<static_cast<unsigned>(tiles), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(args);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace pygen::made_solve
