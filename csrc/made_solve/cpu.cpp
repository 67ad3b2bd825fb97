// CPU kernel of the MADE solve. The samples go in tiles of kTile, the tiles split across threads.
// A tile keeps the inputs filled so far and every hidden layer's activations, one row per sample,
// zero until computed. Step m computes the hidden units of degree m, layer by layer, each as a dot
// product of its weight row with the row below, then the two outputs of input order[m] the same
// way, and fills that input. The weights are read as nn.Linear holds them, masked, in rows: what a
// unit does not see is zero in its row, or not yet computed and zero in the tile; no transposed
// or permuted copy is made. The dots run over whole rows: twice the arithmetic of the masked
// products, at full vector width and with no partial sums written back.
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

// Tiles [begin, end) of kTile samples each.
template <ScaleFn F, typename scalar_t, typename acc_t>
PYGEN_CPU_CLONES void solve_tiles(const Solve& s, const scalar_t* target, scalar_t* x, scalar_t* params,
                                  int64_t begin, int64_t end) {
  const int64_t dim = s.dim, hidden = s.hidden, layers = static_cast<int64_t>(s.weights.size());
  const acc_t c = static_cast<acc_t>(s.clamp), ic = s.clamp > 0 ? acc_t(1) / c : acc_t(0);
  std::vector<const acc_t*> w(layers), b(layers);
  for (int64_t i = 0; i < layers; ++i) {
    w[i] = s.weights[i].const_data_ptr<acc_t>();
    b[i] = s.biases[i].const_data_ptr<acc_t>();
  }
  // Row r of the inputs at in + r * dim, of hidden layer i's activations at act + (i * kTile + r) *
  // hidden; the layer below unit u of layer i is in(i).
  std::vector<acc_t> buffer(kTile * (dim + (layers - 1) * hidden));
  acc_t *in = buffer.data(), *act = in + kTile * dim;
  const auto below = [&](int64_t i) { return i == 0 ? in : act + (i - 1) * kTile * hidden; };
  acc_t sum[kTile], shift[kTile];
  for (int64_t tile = begin; tile < end; ++tile) {
    const int64_t n0 = tile * kTile, rows = std::min(kTile, s.rows - n0);
    std::fill(buffer.begin(), buffer.end(), acc_t(0));
    for (int64_t m = 0; m < dim; ++m) {
      // The units of degree m: every input they see is filled.
      for (int64_t i = 0; m > 0 && i < layers - 1; ++i) {
        const int64_t k = i == 0 ? dim : hidden;
        for (int64_t j = s.bounds[m - 1]; j < s.bounds[m]; ++j) {
          const int64_t u = s.units[j];
          dot_rows(w[i] + u * k, below(i), k, k, sum);
          acc_t* a = act + i * kTile * hidden + u;
          for (int64_t r = 0; r < kTile; ++r) a[r * hidden] = std::max(sum[r] + b[i][u], acc_t(0));
        }
      }
      // Input d's log-scale and shift, rounded to the target's dtype as the op returns them, and
      // its value.
      const int64_t d = s.order[m], last = layers - 1;
      dot_rows(w[last] + d * hidden, below(last), hidden, hidden, sum);
      dot_rows(w[last] + (dim + d) * hidden, below(last), hidden, hidden, shift);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r;
        const scalar_t log_scale = narrow<scalar_t>(sum[r] + b[last][d]);
        const scalar_t t = narrow<scalar_t>(shift[r] + b[last][dim + d]);
        params[n * 2 * dim + d] = log_scale;
        params[n * 2 * dim + dim + d] = t;
        const acc_t xv = widen<acc_t>(target[n * dim + d]);
        const acc_t sv = affine_coupling::scale_log<F>(widen<acc_t>(log_scale), c, ic);
        const scalar_t y = s.keep[d] ? target[n * dim + d]
                                     : narrow<scalar_t>(affine_coupling::coupled<F>(xv, sv, widen<acc_t>(t), s.reverse));
        x[n * dim + d] = y;
        in[r * dim + d] = widen<acc_t>(y);
      }
    }
  }
}

}  // namespace

void solve_cpu(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params) {
  const int64_t tiles = (s.rows + kTile - 1) / kTile;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
        solve_tiles<decltype(f)::value, scalar_t, acc_t>(s, target.const_data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                                         params.data_ptr<scalar_t>(), begin, end);
      });
    });
  });
}

}  // namespace pygen::made_solve
