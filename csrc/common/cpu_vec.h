// A vector of T for the CPU kernels, 32 bytes unless asked (GCC vector extension: 32 bytes are one
// AVX2 register in an x86-64-v3 clone and two SSE registers in the baseline one; 64 bytes are one
// AVX-512 register in x86-64-v4 code), with unaligned loads and stores.
#pragma once

#include <cstdint>
#include <cstring>

namespace pygen {

template <typename T, int64_t kBytes>
struct Lanes {
  typedef T type __attribute__((vector_size(kBytes)));
};
template <typename T, int64_t kBytes = 32>
using Vec = typename Lanes<T, kBytes>::type;
template <typename T, int64_t kBytes = 32>
constexpr int64_t kLanes = kBytes / sizeof(T);

template <typename T, int64_t kBytes = 32>
inline __attribute__((always_inline)) Vec<T, kBytes> load(const T* p) {
  Vec<T, kBytes> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T, typename V>
inline __attribute__((always_inline)) void store(T* p, const V& v) {
  static_assert(sizeof(V) % sizeof(T) == 0, "a vector of T");
  std::memcpy(p, &v, sizeof(v));
}

}  // namespace pygen
