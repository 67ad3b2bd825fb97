// Argument checks shared by every op. Each error names the argument and maps to the Python
// exception a user expects: dtype -> TypeError, shape/value -> ValueError, device -> RuntimeError.
// Checks run in the host C++ units only; the .cu files launch kernels on checked inputs.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

namespace pygen {

inline void check_floating(const at::Tensor& t, const char* name) {
  const auto dt = t.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kHalf || dt == at::kBFloat16,
                   name, " must be float32, float64, float16 or bfloat16, got ", dt);
}

inline void check_same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref,
                             const char* ref_name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(),
                   " but ", ref_name, " has dtype ", ref.scalar_type());
}

inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                              const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but ", ref_name, " is on ",
              ref.device());
}

// The dtype of a per-row sum over a tensor's elements (a flow's logdet, a KL): float32 for 16-bit
// tensors (hundreds of nats rounded to 16 bits lose tenths of a nat), else the tensor's own.
inline at::ScalarType sum_dtype(const at::Tensor& t) { return at::toOpMathType(t.scalar_type()); }

// The gradient of such a sum over `ref`'s rows: on ref's device, of dtype sum_dtype(ref), shape
// `shape`.
inline void check_sum_grad(const at::Tensor& grad, const char* name, const at::Tensor& ref,
                           const char* ref_name, at::IntArrayRef shape) {
  check_same_device(grad, name, ref, ref_name);
  TORCH_CHECK_TYPE(grad.scalar_type() == sum_dtype(ref), name, " must have dtype ", sum_dtype(ref),
                   ", got ", grad.scalar_type());
  TORCH_CHECK_VALUE(grad.sizes() == shape, name, " must have shape ", shape, ", got ", grad.sizes());
}

// A floating tensor with the dtype and device of `ref` and the given shape.
inline void check_matches(const at::Tensor& t, const char* name, const at::Tensor& ref,
                          const char* ref_name, at::IntArrayRef shape) {
  check_floating(t, name);
  check_same_device(t, name, ref, ref_name);
  check_same_dtype(t, name, ref, ref_name);
  TORCH_CHECK_VALUE(t.sizes() == shape, name, " must have shape ", shape, ", got ", t.sizes());
}

// True for CUDA tensors, false for CPU ones; any other device, or CUDA in a CPU-only build, is an
// error.
inline bool on_cuda(const at::Tensor& t, const char* op) {
  if (t.is_cpu()) return false;
  TORCH_CHECK(t.is_cuda(), op, " supports CPU and CUDA tensors, got ", t.device());
#ifndef PYGEN_WITH_CUDA
  TORCH_CHECK(false, "pygen was built without CUDA kernels: ", op, " cannot run on ", t.device());
#endif
  return true;
}

// A Philox seed: one int64 value, on the CPU or on the device of `ref`.
inline void check_seed(const at::Tensor& seed, const at::Tensor& ref) {
  TORCH_CHECK_TYPE(seed.scalar_type() == at::kLong, "seed must be int64, got ", seed.scalar_type());
  TORCH_CHECK_VALUE(seed.numel() == 1, "seed must hold one value, got ", seed.numel());
  TORCH_CHECK(seed.is_cpu() || seed.device() == ref.device(), "seed is on ", seed.device(),
              " but the inputs are on ", ref.device());
}

}  // namespace pygen
