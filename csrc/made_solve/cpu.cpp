// CPU kernel of the MADE solve. The samples go in tiles of kTile, the tiles split across threads.
// A tile keeps the inputs filled so far and every hidden layer's activations, one row per sample,
// zero until computed. Step m computes the hidden units of degree m, layer by layer, each as a dot
// product of its weight row with the row below, then the two outputs of input order[m] the same
// way, and fills that input. The weights are read as nn.Linear holds them, masked, in rows: what a
// unit does not see is zero in its row, or not yet computed and zero in the tile; no transposed
// or permuted copy is made. The dots run over the span of each row whose values exist at that
// step (Solve::filled, Solve::computed): for MAF's orders and a MADE no wider than its degrees,
// the masked products' arithmetic; else up to twice it; at full vector width either way, with no
// partial sums written back.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>

#include "common/cpu_convert.h"
#include "common/cpu_vec.h"
#include "made_solve/made_solve.h"

namespace pygen::made_solve {
namespace {

using affine_coupling::ScaleFn;

// Samples per tile: each dot keeps one vector accumulator per sample, 8 FMA chains in flight.
constexpr int64_t kTile = 8;
// Units of one degree whose gradients one pass over the span below spreads (the backward).
constexpr int64_t kSpreadUnits = 4;

// out[r] = sum_{j < k} w[j] * a[r * lda + j] for the kTile rows of a.
template <typename T>
inline __attribute__((always_inline)) void dot_rows(const T* w, const T* a, int64_t lda, int64_t k, T* out) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[kTile] = {};
  int64_t j = 0;
  for (; j + L <= k; j += L) {
    const Vec<T> wv = load(w + j);
#pragma GCC unroll 8
    for (int64_t r = 0; r < kTile; ++r) acc[r] += wv * load(a + r * lda + j);
  }
#pragma GCC unroll 8
  for (int64_t r = 0; r < kTile; ++r) {
    T sum = 0;
    for (int64_t l = 0; l < L; ++l) sum += acc[r][l];
    for (int64_t i = j; i < k; ++i) sum += w[i] * a[r * lda + i];
    out[r] = sum;
  }
}

// a[r * lda + j] += sum_p g[p][r] * w[p][j] for j < k and every r: P weight rows' share of the
// gradients below. The rows of one step (its two outputs, a degree's units) share the loads and
// stores of a; each element still adds them in row order, as P spreads one after the other would.
template <int64_t P, typename T>
inline __attribute__((always_inline)) void spread_rows(T* a, int64_t lda, const T* const* g, const T* const* w,
                                                       int64_t k) {
  constexpr int64_t L = kLanes<T>;
  int64_t j = 0;
  for (; j + L <= k; j += L) {
    Vec<T> wv[P];
    for (int64_t p = 0; p < P; ++p) wv[p] = load(w[p] + j);
#pragma GCC unroll 8
    for (int64_t r = 0; r < kTile; ++r) {
      Vec<T> av = load(a + r * lda + j);
      for (int64_t p = 0; p < P; ++p) av += g[p][r] * wv[p];
      store(a + r * lda + j, av);
    }
  }
  for (; j < k; ++j) {
    for (int64_t r = 0; r < kTile; ++r) {
      for (int64_t p = 0; p < P; ++p) a[r * lda + j] += g[p][r] * w[p][j];
    }
  }
}

// One tile's state: the inputs filled so far (row r at in + r * dim) and every hidden layer's
// activations (layer i's row r at act + (i * kTile + r) * hidden), zero until computed.
template <typename acc_t>
struct Tile {
  const Solve& s;
  const int64_t dim, hidden, layers;
  std::vector<const acc_t*> w, b;
  std::vector<acc_t> buffer;
  acc_t *in, *act;

  explicit Tile(const Solve& solve)
      : s(solve), dim(s.dim), hidden(s.hidden), layers(static_cast<int64_t>(s.weights.size())),
        w(layers), b(layers), buffer(kTile * (dim + (layers - 1) * hidden)) {
    for (int64_t i = 0; i < layers; ++i) {
      w[i] = s.weights[i].const_data_ptr<acc_t>();
      b[i] = s.biases[i].const_data_ptr<acc_t>();
    }
    in = buffer.data();
    act = in + kTile * dim;
  }

  acc_t* layer(int64_t i) { return act + i * kTile * hidden; }
  acc_t* below(int64_t i) { return i == 0 ? in : layer(i - 1); }
  int64_t fan_in(int64_t i) const { return i == 0 ? dim : hidden; }
  // What of layer i's inputs holds values at step m (after the units of degree m).
  Span span(int64_t i, int64_t m) const { return i == 0 ? s.filled[m] : s.computed[m]; }

  // The hidden units of degree m > 0, layer by layer: every input they see is filled.
  void compute_units(int64_t m) {
    acc_t sum[kTile];
    for (int64_t i = 0; i < layers - 1; ++i) {
      const int64_t k = fan_in(i);
      const Span in = span(i, m);
      for (int64_t j = s.bounds[m - 1]; j < s.bounds[m]; ++j) {
        const int64_t u = s.units[j];
        dot_rows(w[i] + u * k + in.lo, below(i) + in.lo, k, in.hi - in.lo, sum);
        for (int64_t r = 0; r < kTile; ++r) layer(i)[r * hidden + u] = std::max(sum[r] + b[i][u], acc_t(0));
      }
    }
  }
};

// Tiles [begin, end) of kTile samples each.
template <ScaleFn F, typename scalar_t, typename acc_t>
PYGEN_CPU_CLONES void solve_tiles(const Solve& s, const scalar_t* target, scalar_t* x, scalar_t* params,
                                  int64_t begin, int64_t end) {
  Tile<acc_t> tile(s);
  const int64_t dim = s.dim, hidden = s.hidden, last = tile.layers - 1;
  const acc_t c = static_cast<acc_t>(s.clamp), ic = s.clamp > 0 ? acc_t(1) / c : acc_t(0);
  acc_t sum[kTile], shift[kTile];
  for (int64_t t0 = begin; t0 < end; ++t0) {
    const int64_t n0 = t0 * kTile, rows = std::min(kTile, s.rows - n0);
    std::fill(tile.buffer.begin(), tile.buffer.end(), acc_t(0));
    for (int64_t m = 0; m < dim; ++m) {
      if (m > 0) tile.compute_units(m);
      // Input d's log-scale and shift, rounded to the target's dtype as the op returns them, and
      // its value.
      const int64_t d = s.order[m];
      const Span top = tile.span(last, m);
      const int64_t k = top.hi - top.lo;
      dot_rows(tile.w[last] + d * hidden + top.lo, tile.below(last) + top.lo, hidden, k, sum);
      dot_rows(tile.w[last] + (dim + d) * hidden + top.lo, tile.below(last) + top.lo, hidden, k, shift);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r;
        const scalar_t log_scale = narrow<scalar_t>(sum[r] + tile.b[last][d]);
        const scalar_t t = narrow<scalar_t>(shift[r] + tile.b[last][dim + d]);
        params[n * 2 * dim + d] = log_scale;
        params[n * 2 * dim + dim + d] = t;
        const acc_t xv = widen<acc_t>(target[n * dim + d]);
        const acc_t sv = affine_coupling::scale_log<F>(widen<acc_t>(log_scale), c, ic);
        const acc_t out = affine_coupling::coupled<F>(xv, sv, widen<acc_t>(t), s.reverse);
        const scalar_t y = s.keep[d] ? target[n * dim + d] : narrow<scalar_t>(out);
        x[n * dim + d] = y;
        tile.in[r * dim + d] = widen<acc_t>(y);
      }
    }
  }
}

// The sequential part of the backward for tiles [begin, end) (made_solve.h): the steps run
// backwards, each undoing its own forward step. A unit of degree m has its whole gradient when
// step m is reached, every reader of it (outputs and units of degree >= m) being done; its
// pre-activation's gradient goes to g_units, the outputs' to g_out. Gradients are spread only
// over what held values at step m: the rest would land on values already done with, where
// nothing reads them.
template <ScaleFn F, typename scalar_t, typename acc_t>
PYGEN_CPU_CLONES void solve_backward_tiles(const Solve& s, const scalar_t* grad_x, const scalar_t* grad_params,
                                           const scalar_t* target, const scalar_t* params, const acc_t* acts,
                                           scalar_t* grad_target, acc_t* g_units, acc_t* g_out, int64_t begin,
                                           int64_t end) {
  Tile<acc_t> tile(s);  // its weights and spans; its buffer holds the gradients of the tile's values
  const int64_t dim = s.dim, hidden = s.hidden, last = tile.layers - 1;
  const acc_t c = static_cast<acc_t>(s.clamp), ic = s.clamp > 0 ? acc_t(1) / c : acc_t(0);
  acc_t gs[kTile], gt[kTile], gz[kSpreadUnits][kTile];
  for (int64_t t0 = begin; t0 < end; ++t0) {
    const int64_t n0 = t0 * kTile, rows = std::min(kTile, s.rows - n0);
    std::fill(tile.buffer.begin(), tile.buffer.end(), acc_t(0));
    for (int64_t r = 0; grad_x && r < rows; ++r) {
      for (int64_t j = 0; j < dim; ++j) tile.in[r * dim + j] = widen<acc_t>(grad_x[(n0 + r) * dim + j]);
    }
    for (int64_t m = dim - 1; m >= 0; --m) {
      // Input d: the affine map, then the two output rows.
      const int64_t d = s.order[m];
      std::fill_n(gs, kTile, acc_t(0));
      std::fill_n(gt, kTile, acc_t(0));
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r;
        const acc_t g = tile.in[r * dim + d];
        const acc_t a = widen<acc_t>(params[n * 2 * dim + d]), t = widen<acc_t>(params[n * 2 * dim + dim + d]);
        if (grad_params) {
          gs[r] = widen<acc_t>(grad_params[n * 2 * dim + d]);
          gt[r] = widen<acc_t>(grad_params[n * 2 * dim + dim + d]);
        }
        acc_t g_target = g;
        if (!s.keep[d]) {
          const acc_t sv = affine_coupling::scale_log<F>(a, c, ic);
          const auto dy = affine_coupling::coupled_grads<F>(g, widen<acc_t>(target[n * dim + d]), sv, t, s.reverse);
          g_target = dy.x;
          gs[r] += dy.s * affine_coupling::scale_grad<F>(a, sv, ic);
          gt[r] += dy.t;
        }
        grad_target[n * dim + d] = narrow<scalar_t>(g_target);
        g_out[n * 2 * dim + d] = gs[r];
        g_out[n * 2 * dim + dim + d] = gt[r];
      }
      const Span top = tile.span(last, m);
      const acc_t* const out_grads[2] = {gs, gt};
      const acc_t* const out_rows[2] = {tile.w[last] + d * hidden + top.lo,
                                        tile.w[last] + (dim + d) * hidden + top.lo};
      spread_rows<2>(tile.below(last) + top.lo, hidden, out_grads, out_rows, top.hi - top.lo);
      // The units of degree m, from the top layer down (a ReLU passes where the unit is positive),
      // up to kSpreadUnits of them per pass over the span below.
      for (int64_t i = last - 1; m > 0 && i >= 0; --i) {
        const int64_t k = tile.fan_in(i);
        const Span in = tile.span(i, m);
        for (int64_t j0 = s.bounds[m - 1]; j0 < s.bounds[m]; j0 += kSpreadUnits) {
          const int64_t n = std::min(kSpreadUnits, s.bounds[m] - j0);
          const acc_t* unit_grads[kSpreadUnits];
          const acc_t* unit_rows[kSpreadUnits];
          for (int64_t q = 0; q < n; ++q) {
            const int64_t u = s.units[j0 + q];
            std::fill_n(gz[q], kTile, acc_t(0));
            for (int64_t r = 0; r < rows; ++r) {
              const int64_t at = (i * s.rows + n0 + r) * hidden + u;
              gz[q][r] = acts[at] > 0 ? tile.layer(i)[r * hidden + u] : acc_t(0);
              g_units[at] = gz[q][r];
            }
            unit_grads[q] = gz[q];
            unit_rows[q] = tile.w[i] + u * k + in.lo;
          }
          acc_t* below = tile.below(i) + in.lo;
          const int64_t span = in.hi - in.lo;
          switch (n) {
            case 4: spread_rows<4>(below, k, unit_grads, unit_rows, span); break;
            case 3: spread_rows<3>(below, k, unit_grads, unit_rows, span); break;
            case 2: spread_rows<2>(below, k, unit_grads, unit_rows, span); break;
            default: spread_rows<1>(below, k, unit_grads, unit_rows, span);
          }
        }
      }
    }
  }
}

// Rows [begin, end) of zero_unread_cpu.
template <typename T>
PYGEN_CPU_CLONES void zero_unread_rows(T* t, int64_t in, const int64_t* available, const int64_t* step,
                                       int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    T* row = t + r * in;
    for (int64_t v = 0; v < in; ++v) row[v] = available[v] <= step[r] ? row[v] : T(0);
  }
}

}  // namespace

int64_t tiles(const Solve& s) { return (s.rows + kTile - 1) / kTile; }

void solve_cpu(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      at::parallel_for(0, tiles(s), 1, [&](int64_t begin, int64_t end) {
        solve_tiles<decltype(f)::value, scalar_t, acc_t>(s, target.const_data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                         params.data_ptr<scalar_t>(), begin, end);
      });
    });
  });
}

void solve_backward_cpu(const Solve& s, const at::Tensor& grad_x, const at::Tensor& grad_params,
                        const at::Tensor& target, const at::Tensor& params, const at::Tensor& acts,
                        at::Tensor& grad_target, at::Tensor& g_units, at::Tensor& g_out) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto data = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      at::parallel_for(0, tiles(s), 1, [&](int64_t begin, int64_t end) {
        solve_backward_tiles<decltype(f)::value, scalar_t, acc_t>(
            s, data(grad_x), data(grad_params), target.const_data_ptr<scalar_t>(), params.const_data_ptr<scalar_t>(),
            acts.const_data_ptr<acc_t>(), grad_target.data_ptr<scalar_t>(), g_units.data_ptr<acc_t>(),
            g_out.data_ptr<acc_t>(), begin, end);
      });
    });
  });
}

void zero_unread_cpu(at::Tensor& t, const at::Tensor& available, const at::Tensor& step) {
  const int64_t in = t.size(1);
  AT_DISPATCH_FLOATING_TYPES(t.scalar_type(), "made_affine_solve_zero_unread", [&] {
    const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(in, 1));
    at::parallel_for(0, t.size(0), grain, [&](int64_t begin, int64_t end) {
      zero_unread_rows(t.data_ptr<scalar_t>(), in, available.const_data_ptr<int64_t>(),
                       step.const_data_ptr<int64_t>(), begin, end);
    });
  });
}

}  // namespace pygen::made_solve
