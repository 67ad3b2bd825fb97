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

// Every sum y[r, o] + x[r, :k] @ w[:k, o] runs in one order, whatever the tile, the vector width or
// the number of rows: two partial sums, one over the even q starting from y, one over the odd q
// starting from 0, added at the end. A row's results then do not depend on how a caller splits rows
// and columns over threads (its samplers draw the same images at every thread count), nor on
// whether the CPU runs the AVX-512 or the AVX2 code (both contract to FMA).
constexpr int64_t kSums = 2;

// y[r, :W vectors] += x[r, :k] @ w[:k, :W vectors] for R rows (row strides ldx, ldw, ldy). Each
// weight row is loaded once for the R rows; R x W x kSums >= 8 independent FMA chains keep two FMA
// units with a latency of four cycles busy.
template <typename T, int64_t kBytes, int64_t R, int64_t W>
inline __attribute__((always_inline)) void matmul_tile(const T* x, int64_t ldx, const T* w,
                                                       int64_t ldw, int64_t k, T* y, int64_t ldy) {
  using V = Vec<T, kBytes>;
  constexpr int64_t L = kLanes<T, kBytes>;
  V acc[kSums][R][W] = {};
#pragma GCC unroll 4
  for (int64_t r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int64_t v = 0; v < W; ++v) acc[0][r][v] = load<T, kBytes>(y + r * ldy + v * L);
  }
  const auto step = [&](int64_t s, int64_t q) __attribute__((always_inline)) {
    V wq[W];
#pragma GCC unroll 4
    for (int64_t v = 0; v < W; ++v) wq[v] = load<T, kBytes>(w + q * ldw + v * L);
#pragma GCC unroll 4
    for (int64_t r = 0; r < R; ++r) {
      const T xv = x[r * ldx + q];
#pragma GCC unroll 4
      for (int64_t v = 0; v < W; ++v) acc[s][r][v] += xv * wq[v];
    }
  };
  int64_t q = 0;
  for (; q + kSums <= k; q += kSums) {
    step(0, q);
    step(1, q + 1);
  }
  if (q < k) step(0, q);  // q even: the first sum's
#pragma GCC unroll 4
  for (int64_t r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int64_t v = 0; v < W; ++v) store(y + r * ldy + v * L, acc[0][r][v] + acc[1][r][v]);
  }
}

// y[r, :n] += x[r, :k] @ w[:k, :n] for r < rows. The columns in whole tiles of two vectors: by 4
// rows where 32 registers hold the 16 sums (AVX-512), else by 3 (12 sums in 16 registers), then by
// 2, and a last row left alone in tiles of four vectors; the last n % (2 vectors) columns in
// vectors of half the width, down to 16 bytes (a width of 2h = 264 leaves 8), then one by one,
// each summed as the tiles are (kSums).
template <typename T, int64_t kBytes>
inline __attribute__((always_inline)) void matmul_acc(const T* x, int64_t ldx, const T* w,
                                                      int64_t ldw, int64_t k, int64_t n, T* y,
                                                      int64_t ldy, int64_t rows) {
  constexpr int64_t L = kLanes<T, kBytes>;
  constexpr int64_t kRows = kBytes == 64 ? 4 : 3;
  const int64_t tiled = n - n % (2 * L);
  // Rows [0, multi) in tiles of kRows, then of 2; a row left over goes alone.
  const int64_t in_tiles = rows - rows % kRows, multi = in_tiles + (rows - in_tiles) / 2 * 2;
  for (int64_t o = 0; o < tiled; o += 2 * L) {
    int64_t r = 0;
    for (; r < in_tiles; r += kRows) {
      matmul_tile<T, kBytes, kRows, 2>(x + r * ldx, ldx, w + o, ldw, k, y + r * ldy + o, ldy);
    }
    for (; r < multi; r += 2) {
      matmul_tile<T, kBytes, 2, 2>(x + r * ldx, ldx, w + o, ldw, k, y + r * ldy + o, ldy);
    }
  }
  if (multi < rows) {
    const T* xr = x + multi * ldx;
    T* yr = y + multi * ldy;
    int64_t o = 0;
    for (; o + 4 * L <= tiled; o += 4 * L) {
      matmul_tile<T, kBytes, 1, 4>(xr, ldx, w + o, ldw, k, yr + o, ldy);
    }
    if (o < tiled) matmul_tile<T, kBytes, 1, 2>(xr, ldx, w + o, ldw, k, yr + o, ldy);
  }
  if (tiled == n) return;
  if constexpr (kBytes > 16) {
    matmul_acc<T, kBytes / 2>(x, ldx, w + tiled, ldw, k, n - tiled, y + tiled, ldy, rows);
  } else {
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t t = tiled; t < n; ++t) {
        T sums[kSums] = {y[r * ldy + t], T(0)};
        for (int64_t q = 0; q < k; ++q) sums[q % kSums] += x[r * ldx + q] * w[q * ldw + t];
        y[r * ldy + t] = sums[0] + sums[1];
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
