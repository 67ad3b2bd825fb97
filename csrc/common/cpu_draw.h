// The inverse-CDF draw of the CPU samplers (PixelCNN, PixelRNN).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/math.h"
#include "common/philox.h"

namespace pygen {

// The inverse-CDF draw of pygen/sampling/draw.py: first level whose running sum of
// exp((logits - max logits) / temperature) exceeds u times the total (else the last level; level 0
// for a NaN total, from NaN or +inf logits, as the twin). The maximum goes first so that a tiny
// temperature cannot overflow the quotient.
template <typename T>
inline __attribute__((always_inline)) int64_t draw(const T* logits, int64_t levels, T temperature,
                                                   T u, T* scratch) {
  T top = -INFINITY;
  for (int64_t l = 0; l < levels; ++l) top = std::max(top, logits[l]);
#pragma omp simd
  for (int64_t l = 0; l < levels; ++l) scratch[l] = fast_exp((logits[l] - top) / temperature);
  T total = 0;
  for (int64_t l = 0; l < levels; ++l) total += scratch[l];
  const T threshold = u * total;
  T cdf = 0;
  for (int64_t l = 0; l < levels; ++l) {
    cdf += scratch[l];
    if (cdf > threshold) return l;
  }
  return std::isnan(threshold) ? 0 : levels - 1;
}

// Where a CPU sampler's values come from: value g = ((b * C + c) * H + i) * W + j keeps its given
// level (a completion of the given part of the images), else is drawn with its uniform.
template <typename T>
struct ValueSource {
  const T* noise;        // (B, C, H, W) uniforms, or null: Philox uniform g of `seed`
  uint64_t seed;
  const int64_t* given;  // (B, C, H, W) levels, -1 where drawn; or null: every value drawn

  int64_t level(int64_t g, const T* logits, int64_t levels, T temperature, T* scratch) const {
    if (given != nullptr && given[g] >= 0) return given[g];
    const T u = noise != nullptr ? noise[g] : static_cast<T>(uniform_at(g, seed));
    return draw(logits, levels, temperature, u, scratch);
  }
};

}  // namespace pygen
