// CPU kernel of the MADE solve. The samples go in tiles of one vector (8 floats, 4 doubles), the
// tiles split across threads. A tile keeps every layer's pre-activations as one vector per unit,
// so that an update is one FMA per unit with the weight broadcast, and walks the D steps. Each
// step updates only what sees the value just filled: in the first layer the units of degree >= m
// (hidden units are sorted by degree), in each later hidden layer the same units from the ones of
// degree m just completed, and in the output layer the outputs of the inputs not yet filled. The
// D steps together do the arithmetic of one masked pass: half of a dense one.
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

// A unit of a tile is one vector: lane r is sample r. Buffers are plain arrays of T (a std::vector
// of vector types is not allocated at their 32-byte alignment) read through load/store.
template <typename T>
constexpr int64_t R = kLanes<T>;

// pre[col(j)] += sum_{v < k} h[v] * w[v * ldw + col(j)] for j < count, each term a unit.
template <typename T, typename Col>
inline __attribute__((always_inline)) void accumulate(T* pre, int64_t count, Col col, const T* h, int64_t k,
                                                      const T* w, int64_t ldw) {
  if (k == 1) {
    const Vec<T> h0 = load(h);
    for (int64_t j = 0; j < count; ++j) {
      const int64_t c = col(j);
      store(pre + c * R<T>, load(pre + c * R<T>) + h0 * w[c]);
    }
    return;
  }
  for (int64_t j = 0; j < count; ++j) {
    const int64_t c = col(j);
    Vec<T> a = load(pre + c * R<T>);
    for (int64_t v = 0; v < k; ++v) a += load(h + v * R<T>) * w[v * ldw + c];
    store(pre + c * R<T>, a);
  }
}

// Tiles [begin, end) of R<acc_t> samples each. out_cols lists the output layer's columns in
// the order the steps read them: log-scale and shift of order[0], then of order[1], ...
template <ScaleFn F, typename scalar_t, typename acc_t>
PYGEN_CPU_CLONES void solve_tiles(const Solve& s, const std::vector<int64_t>& out_cols, const scalar_t* target,
                                  scalar_t* x, scalar_t* params, int64_t begin, int64_t end) {
  const int64_t dim = s.dim, hidden = s.hidden, layers = static_cast<int64_t>(s.weights.size());
  const acc_t c = static_cast<acc_t>(s.clamp), ic = s.clamp > 0 ? acc_t(1) / c : acc_t(0);
  int64_t block = 1;  // the most units of one degree
  for (int64_t m = 0; m < dim; ++m) block = std::max(block, s.bounds[m] - (m ? s.bounds[m - 1] : 0));
  // Units of hidden layer i at pre + i * hidden * R, the outputs after them; then the ReLUs of a
  // degree's units, and the value filled last step (0 in the lanes past the last sample).
  const int64_t units = (layers - 1) * hidden + 2 * dim;
  std::vector<acc_t> buffer((units + block + 1) * R<acc_t>);
  acc_t *pre = buffer.data(), *out = pre + (layers - 1) * hidden * R<acc_t>;
  acc_t *h = pre + units * R<acc_t>, *filled = h + block * R<acc_t>;
  for (int64_t tile = begin; tile < end; ++tile) {
    const int64_t n0 = tile * R<acc_t>, rows = std::min(R<acc_t>, s.rows - n0);
    for (int64_t i = 0, col = 0; i < layers; ++i) {
      const acc_t* b = s.biases[i].const_data_ptr<acc_t>();
      for (int64_t j = 0; j < s.biases[i].numel(); ++j, ++col) std::fill_n(pre + col * R<acc_t>, R<acc_t>, b[j]);
    }
    std::fill_n(filled, R<acc_t>, acc_t(0));
    for (int64_t m = 0; m < dim; ++m) {
      if (m > 0) {
        const int64_t u0 = s.bounds[m - 1], k = s.bounds[m] - u0;
        const auto from = [u0](int64_t j) { return u0 + j; };
        const acc_t* w0 = s.weights[0].const_data_ptr<acc_t>() + s.order[m - 1] * hidden;
        accumulate(pre, hidden - u0, from, filled, 1, w0, hidden);
        for (int64_t i = 1; i < layers && k > 0; ++i) {  // (a degree may have no units)
          const acc_t* in = pre + ((i - 1) * hidden + u0) * R<acc_t>;
          for (int64_t j = 0; j < k * R<acc_t>; ++j) h[j] = std::max(in[j], acc_t(0));
          const acc_t* w = s.weights[i].const_data_ptr<acc_t>();
          if (i < layers - 1) {
            accumulate(pre + i * hidden * R<acc_t>, hidden - u0, from, h, k, w + u0 * hidden, hidden);
          } else {
            const int64_t* cols = out_cols.data() + 2 * m;
            accumulate(out, 2 * (dim - m), [cols](int64_t j) { return cols[j]; }, h, k, w + u0 * 2 * dim,
                       2 * dim);
          }
        }
      }
      // Input d's parameters, rounded to the target's dtype as the op returns them, and its value.
      const int64_t d = s.order[m];
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t n = n0 + r;
        const scalar_t log_scale = narrow<scalar_t>(out[d * R<acc_t> + r]);
        const scalar_t shift = narrow<scalar_t>(out[(dim + d) * R<acc_t> + r]);
        params[n * 2 * dim + d] = log_scale;
        params[n * 2 * dim + dim + d] = shift;
        const acc_t xv = widen<acc_t>(target[n * dim + d]);
        const acc_t sv = affine_coupling::scale_log<F>(widen<acc_t>(log_scale), c, ic);
        const scalar_t y = s.keep[d] ? target[n * dim + d]
                                     : narrow<scalar_t>(affine_coupling::coupled<F>(xv, sv, widen<acc_t>(shift),
                                                                                     s.reverse));
        x[n * dim + d] = y;
        filled[r] = widen<acc_t>(y);
      }
    }
  }
}

}  // namespace

void solve_cpu(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params) {
  std::vector<int64_t> out_cols(2 * s.dim);
  for (int64_t m = 0; m < s.dim; ++m) {
    out_cols[2 * m] = s.order[m];
    out_cols[2 * m + 1] = s.dim + s.order[m];
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target.scalar_type(), "made_affine_solve_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t tiles = (s.rows + R<acc_t> - 1) / R<acc_t>;
    affine_coupling::with_scale_fn(s.scale_fn, [&](auto f) {
      at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
        solve_tiles<decltype(f)::value, scalar_t, acc_t>(s, out_cols, target.const_data_ptr<scalar_t>(),
                                                         x.data_ptr<scalar_t>(), params.data_ptr<scalar_t>(),
                                                         begin, end);
      });
    });
  });
}

}  // namespace pygen::made_solve
