// The inverse-CDF draw of the CUDA samplers (PixelCNN, PixelRNN) by one warp.
#pragma once

#include <cmath>
#include <cstdint>

#include "common/philox.h"

namespace pygen {

// The inverse-CDF draw of pygen/sampling/draw.py by one warp: lane l owns a run of consecutive
// levels; a warp scan of the runs' sums finds the lane whose run crosses u * total, which then
// walks its run. Returns the level in every lane. (The maximum goes first, and a NaN total draws
// level 0, as in the CPU draw.)
template <typename A>
__device__ int warp_draw(const A* logits, int levels, A temperature, A u) {
  const int lane = threadIdx.x & 31, per = (levels + 31) / 32;
  const int lo = min(lane * per, levels), hi = min(lo + per, levels);
  A top = -INFINITY;
  for (int l = lo; l < hi; ++l) top = max(top, logits[l]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) top = max(top, __shfl_xor_sync(0xffffffffu, top, off));
  A run = 0;
  for (int l = lo; l < hi; ++l) run += exp((logits[l] - top) / temperature);
  A incl = run;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const A v = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += v;
  }
  A excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl = 0;
  const A threshold = u * __shfl_sync(0xffffffffu, incl, 31);
  const unsigned crossing = __ballot_sync(0xffffffffu, lo < hi && incl > threshold);
  if (crossing == 0) return std::isnan(threshold) ? 0 : levels - 1;
  const int owner = __ffs(crossing) - 1;
  int level = hi - 1;
  if (lane == owner) {
    A cdf = excl;
    for (int l = lo; l < hi; ++l) {
      cdf += exp((logits[l] - top) / temperature);
      if (cdf > threshold) {
        level = l;
        break;
      }
    }
  }
  return __shfl_sync(0xffffffffu, level, owner);
}

// The level of value g = ((b * C + c) * H + i) * W + j by one warp: its given level (a completion
// of the given part of the images; `given` null or -1: none), else the draw from `logits` with
// noise[g] or (noise null) Philox uniform g of `seed`. The branch is the same in every lane.
template <typename A, typename T>
__device__ __forceinline__ int warp_level(const T* noise, uint64_t seed, const int64_t* given,
                                          int64_t g, const A* logits, int levels, A temperature) {
  if (given != nullptr && given[g] >= 0) return static_cast<int>(given[g]);
  const A u = noise != nullptr ? static_cast<A>(noise[g]) : static_cast<A>(uniform_at(g, seed));
  return warp_draw(logits, levels, temperature, u);
}

}  // namespace pygen
