// What the image samplers' operators (PixelCNN, PixelRNN) share around their kernels: the checks
// of the sizes, the noise or seed, the contiguous inputs and outputs, and the kernels' dtype
// dispatch. Host C++ only.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "common/checks.h"

namespace pygen {

inline void check_sampler_sizes(int64_t batch, int64_t channels, int64_t height, int64_t width,
                                int64_t n_levels, int64_t kernel_size, double temperature) {
  TORCH_CHECK_VALUE(batch >= 1 && channels >= 1 && height >= 1 && width >= 1,
                    "batch, channels, height and width must be >= 1, got ", batch, ", ", channels,
                    ", ", height, ", ", width);
  TORCH_CHECK_VALUE(n_levels >= 2, "n_levels must be >= 2, got ", n_levels);
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1,
                    "kernel_size must be odd and positive, got ", kernel_size);
  // The draws divide by the temperature in float32: one that rounds to 0 there would give NaN.
  TORCH_CHECK_VALUE(temperature >= std::numeric_limits<float>::min() && std::isfinite(temperature),
                    "temperature must be finite and at least 1.2e-38 (float32's smallest normal "
                    "number), got ", temperature);
}

// A sampler call's tensors as its kernel takes them: contiguous weights, the noise (undefined when
// the seed is used) or the seed (on the weights' device), the given values (undefined when every
// value is drawn), and the outputs: images int64 (B, C, H, W) and logits (B, L, C, H, W), or an
// empty tensor without return_logits.
struct SamplerTensors {
  std::vector<at::Tensor> weights;
  at::Tensor noise, seed, given, images, logits;
};

// Checks the noise or the seed and the given values against the (already checked) weights and
// makes the tensors above.
inline SamplerTensors sampler_tensors(at::TensorList weights,
                                      const std::optional<at::Tensor>& noise,
                                      const std::optional<at::Tensor>& seed,
                                      const std::optional<at::Tensor>& given, int64_t batch,
                                      int64_t channels, int64_t height, int64_t width,
                                      int64_t n_levels, bool return_logits) {
  const at::Tensor& ref = weights[0];
  TORCH_CHECK_VALUE(noise.has_value() != seed.has_value(),
                    "exactly one of noise and seed must be given");
  if (noise) {
    check_matches(*noise, "noise", ref, "weights", {batch, channels, height, width});
    // Checked here rather than in Python, where a data-dependent test breaks a compiled graph;
    // on CUDA it is one reduction and one sync per image-sized call. NaN fails it.
    const bool uniforms = noise->ge(0).logical_and(noise->lt(1)).all().item<bool>();
    TORCH_CHECK_VALUE(uniforms, "noise must hold uniforms in [0, 1)");
  } else {
    check_seed(*seed, ref);
  }
  if (given) {
    // Levels to keep, -1 where the value is drawn: a completion of the given part of the images.
    TORCH_CHECK_TYPE(given->scalar_type() == at::kLong, "given must be int64 levels, got ",
                     given->scalar_type());
    check_same_device(*given, "given", ref, "weights");
    const std::vector<int64_t> shape{batch, channels, height, width};
    TORCH_CHECK_VALUE(given->sizes() == at::IntArrayRef(shape), "given must have shape ",
                      at::IntArrayRef(shape), ", got ", given->sizes());
    const bool levels = given->ge(-1).logical_and(given->lt(n_levels)).all().item<bool>();
    TORCH_CHECK_VALUE(levels, "given must hold levels in [0, ", n_levels, ") or -1 (drawn)");
  }
  SamplerTensors t;
  t.weights.reserve(weights.size());
  for (const auto& w : weights) t.weights.push_back(w.contiguous());
  if (noise) t.noise = noise->contiguous();
  if (seed) t.seed = seed->to(ref.device()).contiguous();
  if (given) t.given = given->contiguous();
  t.images = at::zeros({batch, channels, height, width}, ref.options().dtype(at::kLong));
  t.logits = return_logits ? at::empty({batch, n_levels, channels, height, width}, ref.options())
                           : at::empty({0}, ref.options());
  return t;
}

// Runs a sampler kernel as `run.template operator()<T>(weights, noise, logits)` with T its math
// type: the weights' own for float32 and float64; for 16-bit weights, float32 on the weights and
// noise widened once (the CPU has no faster 16-bit arithmetic to use, and the PixelRNN CUDA kernel
// is bound by its chain of small products, not by bytes), the logits narrowed back to the
// weights' dtype.
template <typename Run>
void dispatch_sampler(const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                          at::Tensor& logits, const Run& run) {
  const auto dtype = weights[0].scalar_type();
  if (dtype == at::kHalf || dtype == at::kBFloat16) {
    std::vector<at::Tensor> wide;
    wide.reserve(weights.size());
    for (const auto& w : weights) wide.push_back(w.to(at::kFloat));
    at::Tensor logits_f = logits.to(at::kFloat);
    run.template operator()<float>(wide, noise.defined() ? noise.to(at::kFloat) : noise, logits_f);
    logits.copy_(logits_f);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(dtype, "image_sampler", [&] {
    run.template operator()<scalar_t>(weights, noise, logits);
  });
}

}  // namespace pygen
