// Standard normals of the Philox stream (philox.h) for the CPU kernels, many blocks at a time:
// the same numbers as normal_at, in SIMD lanes.
#pragma once

#include <cstdint>

namespace pygen {

// The most normals fill_normals makes in one call.
constexpr int64_t kNormalsPerCall = 256;

// out[i] = normal_at(first + i, seed) for i < n <= kNormalsPerCall.
void fill_normals(uint64_t seed, int64_t first, int64_t n, float* out);

}  // namespace pygen
