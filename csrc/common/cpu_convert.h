// Loads and stores of a CPU kernel's storage type through its math type (float for the 16-bit
// types), branch-free and forced inline so that the loops around them vectorize. c10's operators
// did not let them (bfloat16's rounding branches on NaN): every 16-bit loop ran scalar (affine
// coupling in bfloat16 at 7x the time of float32 and 2x the eager reference's, measured).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "common/math.h"

namespace pygen {

template <typename Acc, typename T>
PYGEN_HD Acc widen(T v) {
  return static_cast<Acc>(v);
}

template <>
PYGEN_HD float widen<float, c10::BFloat16>(c10::BFloat16 v) {
  return bits_to_float(static_cast<uint32_t>(v.x) << 16);
}

// Half: c10's branch-free bit arithmetic (c10 picks it over the scalar conversion instruction in a
// build without F16C, as the default x86-64 one is), flattened into the caller: left out of line,
// as GCC did with c10's operators, it too keeps the loop scalar.
template <>
__attribute__((flatten)) PYGEN_HD float widen<float, c10::Half>(c10::Half v) {
  return c10::detail::fp16_ieee_to_fp32_value(v.x);
}

template <typename T, typename Acc>
PYGEN_HD T narrow(Acc v) {
  return static_cast<T>(v);
}

// Float to bfloat16, rounding to nearest even; NaN becomes the quiet NaN c10 gives.
template <>
PYGEN_HD c10::BFloat16 narrow<c10::BFloat16, float>(float v) {
  const uint32_t b = float_to_bits(v);
  const uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
  return c10::BFloat16(static_cast<uint16_t>(v != v ? 0x7fc0u : rounded), c10::BFloat16::from_bits());
}

template <>
__attribute__((flatten)) PYGEN_HD c10::Half narrow<c10::Half, float>(float v) {
  return c10::Half(c10::detail::fp16_ieee_from_fp32_value(v), c10::Half::from_bits());
}

}  // namespace pygen
