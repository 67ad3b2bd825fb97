// Grouped global-memory access shared by the CUDA kernels: a lane owns N consecutive elements
// (kVec by default) and moves them with vector loads/stores (16 bytes at a time) when the group is
// aligned, else element by element (the tail of a row whose length is not a multiple of N).
#pragma once

#include <cstdint>

namespace pygen {

constexpr int kVec = 4;

template <typename scalar_t, int N = kVec>
struct alignas(sizeof(scalar_t) * N) Vec {
  scalar_t v[N];
};

// Elements per lane that fill one 16-byte access for 16-bit types and two for float: streaming
// kernels keep more bytes in flight per lane with it (double stays at kVec).
template <typename scalar_t>
constexpr int wide_group() {
  return sizeof(scalar_t) <= 4 ? 8 : kVec;
}

// The group of N elements at base + i, n of them valid (n == N when aligned); invalid elements
// read as zero. `aligned` is usually a compile-time constant and folds away.
template <int N = kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_group(const scalar_t* base, int64_t i, int n, bool aligned,
                                           acc_t* out) {
  if (aligned) {
    const Vec<scalar_t, N> v = *reinterpret_cast<const Vec<scalar_t, N>*>(base + i);
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = static_cast<acc_t>(v.v[k]);
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k) out[k] = k < n ? static_cast<acc_t>(base[i + k]) : acc_t(0);
  }
}

template <int N = kVec, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_group(scalar_t* base, int64_t i, int n, bool aligned,
                                            const acc_t* in) {
  if (aligned) {
    Vec<scalar_t, N> v;
#pragma unroll
    for (int k = 0; k < N; ++k) v.v[k] = static_cast<scalar_t>(in[k]);
    *reinterpret_cast<Vec<scalar_t, N>*>(base + i) = v;
  } else {
#pragma unroll
    for (int k = 0; k < N; ++k)
      if (k < n) base[i + k] = static_cast<scalar_t>(in[k]);
  }
}

}  // namespace pygen
