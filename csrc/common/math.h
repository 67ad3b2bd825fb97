// Math shared by the CPU and CUDA kernels. On the host, float exp/log/sincos are branch-free
// polynomials (Cephes coefficients) so that the compiler vectorizes the loops that call them;
// on the device the CUDA intrinsics are already fast.
#pragma once

#include <cmath>
#include <cstdint>
#if !defined(__CUDA_ARCH__)
#include <bit>
#endif

#if defined(__CUDACC__)
#define PYGEN_HD __host__ __device__ __forceinline__
#else
#define PYGEN_HD inline __attribute__((always_inline))
#endif

// Host loops that pay for wider vectors are compiled for AVX-512, AVX2 + FMA (x86-64-v3: a plain
// "avx2" clone has no FMA, and the polynomials are chains of them) and the baseline; the loader
// picks the best the CPU supports (GCC function multi-versioning; PYGEN_X86_LEVELS says where).
#include "common/cpu_levels.h"
#if PYGEN_X86_LEVELS && !defined(__CUDACC__)
#define PYGEN_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define PYGEN_CPU_CLONES
#endif

namespace pygen {

// max(x, 0) that keeps a NaN, as torch.relu and the host's std::max(x, 0) do: the device's max is
// fmax, which turns a NaN into 0 (a NaN weight then hid in the GPU samplers' logits).
template <typename T>
PYGEN_HD T relu(T x) {
  return x < T(0) ? T(0) : x;
}

// Round to nearest for |x| < 2^22 with plain adds (SSE2 has no vector round instruction).
PYGEN_HD float round_small(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  return (x + kMagic) - kMagic;
}

PYGEN_HD float bits_to_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  return std::bit_cast<float>(u);
#endif
}

PYGEN_HD uint32_t float_to_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  return std::bit_cast<uint32_t>(f);
#endif
}

// exp(x) for float; relative error ~2e-7 on [-87.3, 88.7228], 0 below, inf above (ln(FLT_MAX) is
// 88.72284: the clamp keeps 2^n y below the exponent field's overflow).
PYGEN_HD float fast_exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  const float xc = x < -87.3f ? -87.3f : (x > 88.7228f ? 88.7228f : x);
  const float n = round_small(xc * 1.44269504088896341f);
  float r = xc - n * 0.693359375f;  // ln2 split in two for an exact reduction
  r = r - n * -2.12194440e-4f;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r2 + r + 1.0f;
  const float scaled = bits_to_float(float_to_bits(y) + (static_cast<uint32_t>(static_cast<int32_t>(n)) << 23));
  return x < -87.3f ? 0.0f : (x > 88.7228f ? INFINITY : scaled);
#endif
}

PYGEN_HD double fast_exp(double x) { return ::exp(x); }

// g v for a gradient g, zero where g is zero even if v is infinite: a backward given no gradient
// for an output gets zeros for it, and its terms must vanish as autograd's would (0 inf is NaN).
template <typename T>
PYGEN_HD T grad_times(T g, T v) {
  return g == T(0) ? T(0) : g * v;
}

// log(u) for normal positive float u (no zero, denormal, inf or NaN: the noise generator's range).
PYGEN_HD float positive_log(float u) {
#if defined(__CUDA_ARCH__)
  return logf(u);
#else
  const uint32_t bits = float_to_bits(u);
  const uint32_t mantissa = bits & 0x007fffffu;
  // u = m * 2^e with m in [0.5, 1); where m < sqrt(1/2) use 2m and e - 1. The select is written as
  // sign-bit arithmetic (small = -1 or 0) so that loops over this function stay branch-free.
  const int32_t small = static_cast<int32_t>(mantissa - 0x3504f3u) >> 31;
  const float e = static_cast<float>(static_cast<int32_t>(bits >> 23) - 126 + small);
  const float m = bits_to_float(mantissa | 0x3f000000u);
  const float x = (m - 1.0f) - static_cast<float>(small) * m;
  const float z = x * x;
  float y = 7.0376836292e-2f;
  y = y * x - 1.1514610310e-1f;
  y = y * x + 1.1676998740e-1f;
  y = y * x - 1.2420140846e-1f;
  y = y * x + 1.4249322787e-1f;
  y = y * x - 1.6668057665e-1f;
  y = y * x + 2.0000714765e-1f;
  y = y * x - 2.4999993993e-1f;
  y = y * x + 3.3333331174e-1f;
  y = y * x * z;
  y += -2.12194440e-4f * e;
  y += -0.5f * z;
  return x + y + 0.693359375f * e;
#endif
}

// sin and cos of 2*pi*t for t in [0, 1).
PYGEN_HD void sincos_2pi(float t, float* s, float* c) {
#if defined(__CUDA_ARCH__)
  sincospif(2.0f * t, s, c);
#else
  // Quadrant q and angle a = 2*pi*(t - q/4) in [-pi/4, pi/4], then rotate by q quarter turns.
  const float q = round_small(4.0f * t);
  const float a = (t - 0.25f * q) * 6.28318530717958648f;
  const float z = a * a;
  const float sin_a = a + a * z * ((-1.9515295891e-4f * z + 8.3321608736e-3f) * z - 1.6666654611e-1f);
  const float cos_a =
      1.0f - 0.5f * z + z * z * ((2.443315711809948e-5f * z - 1.388731625493765e-3f) * z + 4.166664568298827e-2f);
  const int qi = static_cast<int>(q);
  const float sv = (qi & 1) ? cos_a : sin_a;
  const float cv = (qi & 1) ? sin_a : cos_a;
  *s = (qi & 2) ? -sv : sv;
  *c = ((qi + 1) & 2) ? -cv : cv;
#endif
}

// log(1 + u) for u >= 0. On the host log(w) * u / (w - 1), w = 1 + u, undoes the rounding of 1 + u.
PYGEN_HD float log1p_nonneg(float u) {
#if defined(__CUDA_ARCH__)
  return log1pf(u);
#else
  const float w = 1.0f + u;
  const float d = w - 1.0f;
  const float lw = positive_log(w);
  return d == 0.0f ? u : lw * (u / d);
#endif
}

PYGEN_HD double log1p_nonneg(double u) { return ::log1p(u); }

// tanh(x) for float: x P(x^2) / Q(x^2) on x clamped to [-9, 9] (past 9 tanh rounds to +-1), one
// division and no exp, within 6.2 ulp (scripts/fit_tanh.py fits P and Q and checks the error). A
// polynomial below |x| = 0.625 and 1 - 2 / (exp(2|x|) + 1) above, both computed in a vector loop,
// took 0.53 ns a value against 0.33 here (AVX-512, one core; NOTES.md).
PYGEN_HD float fast_tanh(float x) {
#if defined(__CUDA_ARCH__)
  return tanhf(x);
#else
  const float xc = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
  const float z = xc * xc;
  const float p =
      (((1.3355446213e-8f * z + 2.0609722688e-5f) * z + 3.4956305376e-3f) * z + 1.3381062651e-1f) * z +
      9.9999997980e-1f;
  const float q =
      (((7.7769009224e-7f * z + 3.2857016501e-4f) * z + 2.5877147470e-2f) * z + 4.6714378345e-1f) * z + 1.0f;
  const float y = xc * p / q;
  return y < -1.0f ? -1.0f : (y > 1.0f ? 1.0f : y);
#endif
}

PYGEN_HD double fast_tanh(double x) { return ::tanh(x); }

// atan(x) for float: range reduction to |r| <= tan(pi/8), then a polynomial (Cephes), with selects
// instead of branches.
PYGEN_HD float fast_atan(float x) {
#if defined(__CUDA_ARCH__)
  return atanf(x);
#else
  const float ax = std::fabs(x);
  const bool big = ax > 2.414213562373095f;
  const bool mid = ax > 0.4142135623730950f;
  const float r = big ? -1.0f / ax : (mid ? (ax - 1.0f) / (ax + 1.0f) : ax);
  const float base = big ? 1.57079632679489662f : (mid ? 0.785398163397448310f : 0.0f);
  const float z = r * r;
  const float p =
      (((8.05374449538e-2f * z - 1.38776856032e-1f) * z + 1.99777106478e-1f) * z - 3.33329491539e-1f) * z * r + r;
  return std::copysign(base + p, x);
#endif
}

PYGEN_HD double fast_atan(double x) { return ::atan(x); }

// log(sigmoid(x)) = min(x, 0) - log(1 + exp(-|x|)), stable for any x.
template <typename T>
PYGEN_HD T log_sigmoid(T x) {
  const T ax = x < T(0) ? -x : x;
  return (x < T(0) ? x : T(0)) - log1p_nonneg(fast_exp(-ax));
}

}  // namespace pygen
