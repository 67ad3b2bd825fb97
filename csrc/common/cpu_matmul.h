// The small matrix product of the CPU samplers (PixelCNN, PixelRNN): y += x @ w for a few rows of
// x (one per sample or pixel) against weights read in place. At these sizes (1-28 rows) a BLAS call
// spends a third of its time packing the weights; this register-tiled loop reads them once per
// tile of rows. It is built three times, picked per call by what the CPU runs: with 64-byte vectors
// for x86-64-v4 (AVX-512: 32 registers hold the tiles below), 32-byte ones for x86-64-v3 (AVX2 +
// FMA), 16-byte ones for the baseline (SSE2: a 32-byte vector there is a pair of registers, and
// GCC spilled the tiles of pairs and built each broadcast through memory, 25x slower). The
// samplers' loops around it are cloned for the same three levels (PYGEN_MATMUL_CLONES), for their
// element-wise gates.
#pragma once

#include <cstdint>

#include "common/cpu_vec.h"

#if PYGEN_X86_LEVELS
#define PYGEN_MATMUL_CLONES \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define PYGEN_MATMUL_WIDE __attribute__((target("arch=x86-64-v4")))
#define PYGEN_MATMUL_NARROW __attribute__((target("arch=x86-64-v3")))
#else
#define PYGEN_MATMUL_CLONES
#define PYGEN_MATMUL_WIDE
#define PYGEN_MATMUL_NARROW
#endif

namespace pygen {

// The vector width of matmul_acc on this CPU, in bytes: 64 with AVX-512 (cpu_uses_avx512), 32 with
// AVX2 + FMA, else 16 on x86-64 (32 elsewhere: on Arm, 32 NEON registers hold the 32-byte tiles).
inline int64_t matmul_vector_bytes() {
#if PYGEN_X86_LEVELS
  static const int64_t bytes = cpu_uses_avx512() ? 64 : __builtin_cpu_supports("x86-64-v3") ? 32 : 16;
  return bytes;
#elif defined(__x86_64__)
  return 16;
#else
  return 32;
#endif
}

// The width, in values, of the output tiles of matmul_acc on this CPU (two vectors): callers that
// split outputs over threads split them in whole tiles.
template <typename T>
int64_t matmul_tile_width() {
  return 2 * matmul_vector_bytes() / static_cast<int64_t>(sizeof(T));
}

namespace detail {

// y[r, :2 vectors] += x[r, :k] @ w[:k, :2 vectors] for R rows (row strides ldx, ldw, ldy). Each
// weight row is loaded once for the R rows, into R x 2 accumulators; with few rows, S partial sums
// over interleaved q keep R * 2 * S >= 8 independent FMA chains in flight (two FMA units with a
// latency of four cycles), which a single row's two chains would leave mostly idle.
template <typename T, int64_t kBytes, int64_t R, int64_t S>
inline __attribute__((always_inline)) void matmul_tile(const T* x, int64_t ldx, const T* w,
                                                       int64_t ldw, int64_t k, T* y, int64_t ldy) {
  using V = Vec<T, kBytes>;
  constexpr int64_t L = kLanes<T, kBytes>;
  V acc[S][R][2] = {};
#pragma GCC unroll 4
  for (int64_t r = 0; r < R; ++r) {
    acc[0][r][0] = load<T, kBytes>(y + r * ldy);
    acc[0][r][1] = load<T, kBytes>(y + r * ldy + L);
  }
  int64_t q = 0;
  for (; q + S <= k; q += S) {
#pragma GCC unroll 4
    for (int64_t s = 0; s < S; ++s) {
      const V w0 = load<T, kBytes>(w + (q + s) * ldw), w1 = load<T, kBytes>(w + (q + s) * ldw + L);
#pragma GCC unroll 4
      for (int64_t r = 0; r < R; ++r) {
        const T xv = x[r * ldx + q + s];
        acc[s][r][0] += xv * w0;
        acc[s][r][1] += xv * w1;
      }
    }
  }
  for (; q < k; ++q) {
    const V w0 = load<T, kBytes>(w + q * ldw), w1 = load<T, kBytes>(w + q * ldw + L);
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
// 2, then 1); the last n % (2 vectors) outputs in tiles of half the width, down to 16-byte vectors
// (a width of 2h = 264 leaves 8), then one by one.
template <typename T, int64_t kBytes>
inline __attribute__((always_inline)) void matmul_acc(const T* x, int64_t ldx, const T* w,
                                                      int64_t ldw, int64_t k, int64_t n, T* y,
                                                      int64_t ldy, int64_t rows) {
  constexpr int64_t kWidth = 2 * kLanes<T, kBytes>;
  int64_t o = 0;
  for (; o + kWidth <= n; o += kWidth) {
    const T* wo = w + o;
    int64_t r = 0;
    for (; r + 4 <= rows; r += 4) {
      matmul_tile<T, kBytes, 4, 1>(x + r * ldx, ldx, wo, ldw, k, y + r * ldy + o, ldy);
    }
    for (; r + 2 <= rows; r += 2) {
      matmul_tile<T, kBytes, 2, 2>(x + r * ldx, ldx, wo, ldw, k, y + r * ldy + o, ldy);
    }
    for (; r < rows; ++r) {
      matmul_tile<T, kBytes, 1, 4>(x + r * ldx, ldx, wo, ldw, k, y + r * ldy + o, ldy);
    }
  }
  if constexpr (kBytes > 16) {
    if (o < n) matmul_acc<T, kBytes / 2>(x, ldx, w + o, ldw, k, n - o, y + o, ldy, rows);
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t q = 0; q < k; ++q) {
        const T xv = x[r * ldx + q];
        for (int64_t t = o; t < n; ++t) y[r * ldy + t] += xv * w[q * ldw + t];
      }
    }
  }
}

template <typename T>
PYGEN_MATMUL_WIDE void matmul_acc_wide(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t k,
                                       int64_t n, T* y, int64_t ldy, int64_t rows) {
  matmul_acc<T, 64>(x, ldx, w, ldw, k, n, y, ldy, rows);
}

template <typename T>
PYGEN_MATMUL_NARROW void matmul_acc_narrow(const T* x, int64_t ldx, const T* w, int64_t ldw,
                                           int64_t k, int64_t n, T* y, int64_t ldy, int64_t rows) {
  matmul_acc<T, 32>(x, ldx, w, ldw, k, n, y, ldy, rows);
}

template <typename T>
void matmul_acc_baseline(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t k, int64_t n,
                         T* y, int64_t ldy, int64_t rows) {
  matmul_acc<T, 16>(x, ldx, w, ldw, k, n, y, ldy, rows);
}

}  // namespace detail

// y[r, :n] += x[r, :k] @ w[:k, :n] for r < rows (row strides ldx, ldw, ldy), in the widest vectors
// this CPU runs.
template <typename T>
void matmul_acc(const T* x, int64_t ldx, const T* w, int64_t ldw, int64_t k, int64_t n, T* y,
                int64_t ldy, int64_t rows) {
  switch (matmul_vector_bytes()) {
    case 64:
      return detail::matmul_acc_wide(x, ldx, w, ldw, k, n, y, ldy, rows);
    case 32:
      return detail::matmul_acc_narrow(x, ldx, w, ldw, k, n, y, ldy, rows);
    default:
      return detail::matmul_acc_baseline(x, ldx, w, ldw, k, n, y, ldy, rows);
  }
}

}  // namespace pygen
