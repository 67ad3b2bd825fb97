// A 32-byte vector of T for the CPU kernels (GCC vector extension: one AVX2 register in an
// x86-64-v3 clone, two SSE registers in the baseline one), with unaligned loads and stores.
#pragma once

#include <cstdint>
#include <cstring>

namespace pygen {

template <typename T>
struct Lanes {
  typedef T type __attribute__((vector_size(32)));
};
template <typename T>
using Vec = typename Lanes<T>::type;
template <typename T>
constexpr int64_t kLanes = 32 / sizeof(T);

template <typename T>
inline __attribute__((always_inline)) Vec<T> load(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
inline __attribute__((always_inline)) void store(T* p, const Vec<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

}  // namespace pygen
