// Grouped global-memory access shared by the CUDA kernels: a lane owns kVec consecutive elements
// and moves them with one vector load/store (16 bytes for float) when the group is aligned, else
// element by element (the tail of a row whose length is not a multiple of kVec).
#pragma once

#include <cstdint>

namespace pygen {

constexpr int kVec = 4;

template <typename scalar_t>
struct alignas(sizeof(scalar_t) * kVec) Vec {
  scalar_t v[kVec];
};

// The group of kVec elements at base + i, n of them valid (n == kVec when aligned); invalid
// elements read as zero. `aligned` is usually a compile-time constant and folds away.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_group(const scalar_t* base, int64_t i, int n, bool aligned,
                                           acc_t* out) {
  if (aligned) {
    const Vec<scalar_t> v = *reinterpret_cast<const Vec<scalar_t>*>(base + i);
#pragma unroll
    for (int k = 0; k < kVec; ++k) out[k] = static_cast<acc_t>(v.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k) out[k] = k < n ? static_cast<acc_t>(base[i + k]) : acc_t(0);
  }
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_group(scalar_t* base, int64_t i, int n, bool aligned,
                                            const acc_t* in) {
  if (aligned) {
    Vec<scalar_t> v;
#pragma unroll
    for (int k = 0; k < kVec; ++k) v.v[k] = static_cast<scalar_t>(in[k]);
    *reinterpret_cast<Vec<scalar_t>*>(base + i) = v;
  } else {
#pragma unroll
    for (int k = 0; k < kVec; ++k)
      if (k < n) base[i + k] = static_cast<scalar_t>(in[k]);
  }
}

}  // namespace pygen
