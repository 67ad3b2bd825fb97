// The inverse-CDF draw of the CPU samplers (PixelCNN, PixelRNN).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/math.h"

namespace pygen {

// The inverse-CDF draw of pygen/sampling/draw.py: first level whose running sum of
// exp((logits - max logits) / temperature) exceeds u times the total (else the last level). The
// maximum goes first so that a tiny temperature cannot overflow the quotient (inf - inf is NaN).
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
  return levels - 1;
}

}  // namespace pygen
