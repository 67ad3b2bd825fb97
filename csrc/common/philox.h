// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011), identical on CPU and CUDA.
// Element g of a random tensor is lane g % 4 of block g / 4 under the key `seed`: any element can
// be recomputed on its own, which is how backward kernels regenerate the forward noise.
#pragma once

#include "common/math.h"

namespace pygen {

// Philox4x32's round multipliers and key increments (the Weyl constants), shared with the CPU lanes
// of cpu_philox.cpp.
constexpr uint32_t kPhiloxMul0 = 0xD2511F53u, kPhiloxMul1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyStep0 = 0x9E3779B9u, kPhiloxKeyStep1 = 0xBB67AE85u;

struct Philox4 {
  uint32_t v[4];
};

PYGEN_HD Philox4 philox4x32_10(uint64_t block, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#if defined(__CUDA_ARCH__)
#pragma unroll
#else
#pragma GCC unroll 10
#endif
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxMul0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxMul1) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kPhiloxKeyStep0;
    k1 += kPhiloxKeyStep1;
  }
  return {{c0, c1, c2, c3}};
}

// Two standard normals from two Philox words: Box-Muller with 24-bit uniforms, u1 in (0, 1] so
// that log never sees 0 (tails reach 5.77 sigma).
PYGEN_HD void box_muller(uint32_t w1, uint32_t w2, float* first, float* second) {
  constexpr float kScale = 5.9604644775390625e-8f;  // 2^-24
  const float u1 = static_cast<float>((w1 >> 8) + 1u) * kScale;
  const float u2 = static_cast<float>(w2 >> 8) * kScale;
  const float radius = sqrtf(-2.0f * positive_log(u1));
  float s, c;
  sincos_2pi(u2, &s, &c);
  *first = radius * c;
  *second = radius * s;
}

// Four standard normals from one Philox block: Box-Muller on (v0, v1) and (v2, v3).
PYGEN_HD void normal4(uint64_t block, uint64_t seed, float out[4]) {
  const Philox4 r = philox4x32_10(block, seed);
  box_muller(r.v[0], r.v[1], &out[0], &out[1]);
  box_muller(r.v[2], r.v[3], &out[2], &out[3]);
}

// Standard normal number g of the stream `seed`.
PYGEN_HD float normal_at(uint64_t g, uint64_t seed) {
  float n[4];
  normal4(g >> 2, seed, n);
  return n[g & 3];
}

// Uniform number g of the stream `seed` in [0, 1): 24 bits of Philox lane g % 4 of block g / 4.
PYGEN_HD float uniform_at(uint64_t g, uint64_t seed) {
  return static_cast<float>(philox4x32_10(g >> 2, seed).v[g & 3] >> 8) * 5.9604644775390625e-8f;
}

}  // namespace pygen
