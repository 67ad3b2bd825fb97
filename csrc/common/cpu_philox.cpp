// GCC vectorizes philox4x32_10's scalar rounds with 64-bit products (vpmullq: three micro-ops on
// AVX-512) and permutes between 32- and 64-bit lanes. Here each block's words live in the low
// halves of 64-bit lanes, where pmuludq multiplies them into the whole product (one micro-op): a
// round is 2 multiplies, 2 shifts and 2 three-way xors a lane. The high halves carry junk that
// nothing reads: pmuludq and the final narrowing read the low halves only.
#include "common/cpu_philox.h"

#include <algorithm>

#include "common/cpu_vec.h"
#include "common/philox.h"

#if PYGEN_X86_LEVELS
#include <immintrin.h>
#define PYGEN_PHILOX_LANES 1
#endif

namespace pygen {
namespace {

// Blocks of one call (a start up to 3 values into its first block), rounded up to whole vectors
// of 8 lanes: philox_blocks writes up to a vector past the blocks asked for.
constexpr int64_t kBlocks = ((3 + kNormalsPerCall + 3) / 4 + 7) / 8 * 8;

#if PYGEN_PHILOX_LANES
using Lanes8 = Vec<uint64_t, 64>;
using Lanes4 = Vec<uint64_t, 32>;

// pmuludq: the 64-bit products of the lanes' low halves. Plain inline, not always_inline: code of
// a target may only be inlined into code of the same target, which philox_lanes becomes once the
// `flatten` callers below have inlined it.
__attribute__((target("arch=x86-64-v4"))) inline Lanes8 mul_low_halves(Lanes8 a, Lanes8 b) {
  return reinterpret_cast<Lanes8>(_mm512_mul_epu32(reinterpret_cast<__m512i>(a), reinterpret_cast<__m512i>(b)));
}
__attribute__((target("avx2"))) inline Lanes4 mul_low_halves(Lanes4 a, Lanes4 b) {
  return reinterpret_cast<Lanes4>(_mm256_mul_epu32(reinterpret_cast<__m256i>(a), reinterpret_cast<__m256i>(b)));
}

// Word k of blocks block0 + l (l < kChains times the lanes of V) to words[k * kBlocks + l]:
// philox4x32_10's rounds, lane-wise, in kChains independent chains (a round's multiply, shift
// and xor depend on each other: one chain leaves the units idle).
template <typename V, int kChains>
inline void philox_lanes(uint64_t block0, uint64_t seed, uint32_t* words) {
  constexpr int64_t kLanes = sizeof(V) / sizeof(uint64_t);
  V c0[kChains], c1[kChains], c2[kChains], c3[kChains];
  for (int ch = 0; ch < kChains; ++ch) {
    for (int64_t l = 0; l < kLanes; ++l) c0[ch][l] = block0 + ch * kLanes + l;
    c1[ch] = c0[ch] >> 32;
    c2[ch] = V{};
    c3[ch] = V{};
  }
  const V m0 = V{} + kPhiloxMul0, m1 = V{} + kPhiloxMul1;
  uint64_t k0 = static_cast<uint32_t>(seed), k1 = seed >> 32;
#pragma GCC unroll 10
  for (int round = 0; round < 10; ++round) {
#pragma GCC unroll 4
    for (int ch = 0; ch < kChains; ++ch) {
      const V p0 = mul_low_halves(c0[ch], m0), p1 = mul_low_halves(c2[ch], m1);
      c0[ch] = (p1 >> 32) ^ c1[ch] ^ k0;
      c2[ch] = (p0 >> 32) ^ c3[ch] ^ k1;
      c1[ch] = p1;
      c3[ch] = p0;
    }
    k0 = static_cast<uint32_t>(k0 + kPhiloxKeyStep0);
    k1 = static_cast<uint32_t>(k1 + kPhiloxKeyStep1);
  }
  using Words = Vec<uint32_t, sizeof(V) / 2>;
  for (int ch = 0; ch < kChains; ++ch) {
    uint32_t* w = words + ch * kLanes;
    store(w, __builtin_convertvector(c0[ch], Words));
    store(w + kBlocks, __builtin_convertvector(c1[ch], Words));
    store(w + 2 * kBlocks, __builtin_convertvector(c2[ch], Words));
    store(w + 3 * kBlocks, __builtin_convertvector(c3[ch], Words));
  }
}

// Blocks [block0, block0 + n), rounded up to whole vectors: 4 chains at a time, then one.
template <typename V>
inline void philox_blocks_in(uint64_t block0, int64_t n, uint64_t seed, uint32_t* words) {
  constexpr int64_t kLanes = sizeof(V) / sizeof(uint64_t), kStep = 4 * kLanes;
  int64_t b = 0;
  for (; b + kStep <= n; b += kStep) philox_lanes<V, 4>(block0 + b, seed, words + b);
  for (; b < n; b += kLanes) philox_lanes<V, 1>(block0 + b, seed, words + b);
}

__attribute__((target("arch=x86-64-v4"), flatten)) void philox_blocks_avx512(uint64_t block0, int64_t n,
                                                                              uint64_t seed, uint32_t* words) {
  philox_blocks_in<Lanes8>(block0, n, seed, words);
}

__attribute__((target("avx2"), flatten)) void philox_blocks_avx2(uint64_t block0, int64_t n, uint64_t seed,
                                                                  uint32_t* words) {
  philox_blocks_in<Lanes4>(block0, n, seed, words);
}
#endif

// Blocks [block0, block0 + n) (and up to a whole vector past them) as words[k * kBlocks + b].
void philox_blocks(uint64_t block0, int64_t n, uint64_t seed, uint32_t* words) {
#if PYGEN_PHILOX_LANES
  if (cpu_uses_avx512()) return philox_blocks_avx512(block0, n, seed, words);
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return philox_blocks_avx2(block0, n, seed, words);
#endif
  for (int64_t b = 0; b < n; ++b) {
    const Philox4 r = philox4x32_10(block0 + b, seed);
    for (int k = 0; k < 4; ++k) words[k * kBlocks + b] = r.v[k];
  }
}

// normals[4 * b + k]: Box-Muller on the words of block b, lane-wise.
PYGEN_CPU_CLONES void normals_of_words(const uint32_t* words, int64_t n, float* normals) {
#pragma omp simd
  for (int64_t b = 0; b < n; ++b) {
    box_muller(words[b], words[kBlocks + b], &normals[4 * b], &normals[4 * b + 1]);
    box_muller(words[2 * kBlocks + b], words[3 * kBlocks + b], &normals[4 * b + 2], &normals[4 * b + 3]);
  }
}

}  // namespace

void fill_normals(uint64_t seed, int64_t first, int64_t n, float* out) {
  alignas(64) uint32_t words[4 * kBlocks];
  alignas(64) float normals[4 * kBlocks];
  const int64_t block0 = first >> 2, skip = first & 3;
  const int64_t blocks = (skip + n + 3) >> 2;
  philox_blocks(static_cast<uint64_t>(block0), blocks, seed, words);
  normals_of_words(words, blocks, normals);
  std::copy_n(normals + skip, n, out);
}

}  // namespace pygen
