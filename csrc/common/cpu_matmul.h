// The small matrix product of the CPU samplers (PixelCNN, PixelRNN): y += x @ w for a few rows of
// x (one per sample or pixel) against weights read in place. At these sizes (1-28 rows) a BLAS call
// spends a third of its time packing the weights; this register-tiled loop reads them once per
// tile of rows. Functions built on it are compiled for x86-64-v3 (AVX2 + FMA: the 32-byte Vec is
// one register) as well as the baseline, picked at load time (PYGEN_MATMUL_CLONES).
#pragma once

#include <cstdint>

#include "common/cpu_vec.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define PYGEN_MATMUL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PYGEN_MATMUL_CLONES
#endif

namespace pygen {

// y[r, :2 vectors] += x[r, :k] @ w[:k, :2 vectors] for R rows (row strides ldx, ldw, ldy). Each
// weight row is loaded once for the R rows, into R x 2 accumulators; with few rows, S partial sums
// over interleaved q keep R * 2 * S >= 8 independent FMA chains in flight (two FMA units with a
// latency of four cycles), which a single row's two chains would leave mostly idle.
template <typename T, int64_t R, int64_t S>
inline __attribute__((always_inline)) void matmul_tile(const T* x, int64_t ldx, const T* w,
                                                       int64_t ldw, int64_t k, T* y, int64_t ldy) {
  constexpr int64_t L = kLanes<T>;
  Vec<T> acc[S][R][2] = {};
#pragma GCC unroll 4
  for (int64_t r = 0; r < R; ++r) {
    acc[0][r][0] = load(y + r * ldy);
    acc[0][r][1] = load(y + r * ldy + L);
  }
  int64_t q = 0;
  for (; q + S <= k; q += S) {
#pragma GCC unroll 4
    for (int64_t s = 0; s < S; ++s) {
      const Vec<T> w0 = load(w + (q + s) * ldw), w1 = load(w + (q + s) * ldw + L);
#pragma GCC unroll 4
      for (int64_t r = 0; r < R; ++r) {
        const T xv = x[r * ldx + q + s];
        acc[s][r][0] += xv * w0;
        acc[s][r][1] += xv * w1;
      }
    }
  }
  for (; q < k; ++q) {
    const Vec<T> w0 = load(w + q * ldw), w1 = load(w + q * ldw + L);
#pragma GCC unroll 4
    for (int64_t r = 0; r < R; ++r) {
      acc[0][r][0] += x[r * ldx + q] * w0;
      acc[0][r][1] += x[r * ldx + q] * w1;
    }
  }
#pragma GCC unroll 4
  for (int64_t r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int64_t s = 1; s < S; ++s) {
      acc[0][r][0] += acc[s][r][0];
      acc[0][r][1] += acc[s][r][1];
    }
    store(y + r * ldy, acc[0][r][0]);
    store(y + r * ldy + L, acc[0][r][1]);
  }
}

// y[r, :n] += x[r, :k] @ w[:k, :n] for r < rows: tiles of two vectors of outputs, by 4 rows (then
// 2, then 1), then the last n % (2 vectors) outputs one by one.
template <typename T>
inline __attribute__((always_inline)) void matmul_acc(const T* x, int64_t ldx, const T* w,
                                                      int64_t ldw, int64_t k, int64_t n, T* y,
                                                      int64_t ldy, int64_t rows) {
  constexpr int64_t kWidth = 2 * kLanes<T>;
  int64_t o = 0;
  for (; o + kWidth <= n; o += kWidth) {
    const T* wo = w + o;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      matmul_tile<T, 4, 1>(x + r * ldx, ldx, wo, ldw, k, y + r * ldy + o, ldy);
    }
    for (; r + 2 <= rows; r += 2) {
      matmul_tile<T, 2, 2>(x + r * ldx, ldx, wo, ldw, k, y + r * ldy + o, ldy);
    }
    for (; r < rows; ++r) matmul_tile<T, 1, 4>(x + r * ldx, ldx, wo, ldw, k, y + r * ldy + o, ldy);
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t q = 0; q < k; ++q) {
      const T xv = x[r * ldx + q];
      for (int64_t t = o; t < n; ++t) y[r * ldy + t] += xv * w[q * ldw + t];
    }
  }
}

}  // namespace pygen
