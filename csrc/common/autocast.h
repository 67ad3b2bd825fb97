// Autocast for pygen's ops, as torch's "promote" ops (cat, addcdiv...) have it: in an autocast
// region the floating-point tensor arguments run in their widest dtype, so that a float32 input
// next to the bfloat16 output of an autocast matmul runs in float32 (what the twin's type
// promotion gives), and all-16-bit arguments stay on the 16-bit kernels.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <initializer_list>
#include <optional>

namespace pygen {

// The widest floating-point dtype among the defined tensors (float32 if none is).
inline at::ScalarType widest_floating(std::initializer_list<const at::Tensor*> tensors) {
  std::optional<at::ScalarType> widest;
  for (const at::Tensor* t : tensors) {
    if (t == nullptr || !t->defined() || !at::isFloatingType(t->scalar_type())) continue;
    widest = widest ? at::promote_types(*widest, t->scalar_type()) : t->scalar_type();
  }
  return widest.value_or(at::kFloat);
}

// t in dtype when it is floating-point (others are left for the op's checks to report).
inline at::Tensor promoted(const at::Tensor& t, at::ScalarType dtype) {
  return t.defined() && at::isFloatingType(t.scalar_type()) ? t.to(dtype) : t;
}

inline std::optional<at::Tensor> promoted(const std::optional<at::Tensor>& t, at::ScalarType dtype) {
  return t ? std::optional<at::Tensor>(promoted(*t, dtype)) : std::nullopt;
}

// In scope while an op's autocast kernel calls the op again: autocast off below it.
struct AutocastOff : c10::impl::ExcludeDispatchKeyGuard {
  AutocastOff() : c10::impl::ExcludeDispatchKeyGuard(c10::autocast_dispatch_keyset) {}
};

}  // namespace pygen
