// A vector of T for the CPU kernels, 32 bytes unless asked (GCC vector extension: 32 bytes are one
// AVX2 register in an x86-64-v3 clone and two SSE registers in the baseline one; 64 bytes are one
// AVX-512 register in x86-64-v4 code), with unaligned loads and stores.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/cpu_levels.h"

namespace pygen {

// Whether the CPU kernels take their AVX-512 paths (the samplers' 64-byte products, the Philox
// generator's 64-byte lanes): on x86-64-v4 CPUs unless PYGEN_CPU_AVX512=0 (the AVX2 or baseline
// paths, for tests and A/B timing on the same machine). Decided once per process.
inline bool cpu_uses_avx512() {
#if PYGEN_X86_LEVELS
  static const bool wide = [] {
    const char* setting = std::getenv("PYGEN_CPU_AVX512");
    const bool disabled = setting != nullptr && std::string(setting) == "0";
    return __builtin_cpu_supports("x86-64-v4") && !disabled;
  }();
  return wide;
#else
  return false;
#endif
}

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
