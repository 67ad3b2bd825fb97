// Device-independent part of the PixelRNN sampler: argument checks, contiguous copies, outputs,
// dispatch to the CPU or CUDA kernel, and the operator's registration (sampling has no gradient).
#include "pixelrnn/pixelrnn.h"

#include <torch/library.h>

#include <string>

#include "common/checks.h"
#include "common/sampler.h"

namespace pygen::pixelrnn {
namespace {

// Checks every weight against the shapes the problem implies; fills in layers, hidden and
// row_kernel.
void check_weights(Problem& p, at::TensorList w) {
  const int64_t n = static_cast<int64_t>(w.size());
  const int64_t per_layer = p.diagonal ? kDiagonalLayer : kRowLayer;
  TORCH_CHECK_VALUE(n >= kInput + per_layer + kHead && (n - kInput - kHead) % per_layer == 0,
                    "weights of a ", p.diagonal ? "Diagonal BiLSTM" : "Row LSTM", " must hold ",
                    kInput, " tensors for the input convolution, ", per_layer,
                    " per layer and ", kHead, " for the head, got ", n);
  const at::Tensor& ref = w[kInW];
  const auto dtype = ref.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   "the PixelRNN sampler supports float32, float64, float16 and bfloat16 weights, "
                   "got ", dtype);
  const int64_t kh = p.kernel / 2 + 1;
  TORCH_CHECK_VALUE(ref.dim() == 2 && ref.size(1) > 0,
                    "weights[0] (the input convolution) must have shape (kh * k * C, hidden), got ",
                    ref.sizes());
  p.layers = (n - kInput - kHead) / per_layer;
  p.hidden = ref.size(1);
  const int64_t h = p.hidden, h4 = 4 * h;
  TORCH_CHECK_VALUE(h % p.channels == 0, "hidden (", h, ") must be divisible by channels (",
                    p.channels, ")");
  check_matches(ref, "weights[0] (the input convolution)", ref, "weights[0]",
                {kh * p.kernel * p.channels, h});
  check_matches(w[kInB], "weights[1] (its bias)", ref, "weights[0]", {h});
  const at::Tensor& first_is_w = w[kInput + kIsW];
  TORCH_CHECK_VALUE(first_is_w.dim() == 2 && first_is_w.size(0) >= h,
                    "weights[2] (input-to-state of layer 0) must have shape (kw * hidden, 4 * "
                    "hidden), got ", first_is_w.sizes());
  p.row_kernel = p.diagonal ? 1 : first_is_w.size(0) / h;
  const auto check = [&](int64_t index, const std::string& what, at::IntArrayRef shape) {
    const std::string name = "weights[" + std::to_string(index) + "] (" + what + ")";
    check_matches(w[index], name.c_str(), ref, "weights[0]", shape);
  };
  const auto check_direction = [&](int64_t at, const std::string& name, int64_t taps,
                                   int64_t in_kernel) {
    check(at + kIsW, "input-to-state of " + name, {in_kernel * h, h4});
    check(at + kIsB, "its bias", {h4});
    check(at + kSsW, "state-to-state of " + name, {taps * h, h4});
    check(at + kSsB, "its bias", {h4});
  };
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t at = kInput + l * per_layer;
    const std::string layer = "layer " + std::to_string(l);
    if (p.diagonal) {
      check_direction(at, "the left-to-right direction of " + layer, 2, 1);
      check_direction(at + kDirection, "the right-to-left direction of " + layer, 2, 1);
      check(at + kDirection + kExW, "image-to-state of " + layer, {p.channels, h4});
      check(at + kDirection + kExB, "its bias", {h4});
    } else {
      check_direction(at, layer, 3, p.row_kernel);
    }
    check(at + per_layer - kOut, "output of " + layer, {h, h});
    check(at + per_layer - kOut + 1, "its bias", {h});
  }
  const int64_t head = kInput + p.layers * per_layer;
  check(head + kW1, "head w1", {h, h});
  check(head + kB1, "head b1", {h});
  check(head + kW2, "head w2", {h, p.channels * p.levels});
  check(head + kB2, "head b2", {p.channels * p.levels});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sample(at::TensorList weights,
                                          const std::optional<at::Tensor>& noise,
                                          const std::optional<at::Tensor>& seed,
                                          const std::optional<at::Tensor>& given,
                                          c10::string_view kind, int64_t batch, int64_t channels,
                                          int64_t height, int64_t width, int64_t n_levels,
                                          int64_t kernel_size, double temperature,
                                          bool return_logits) {
  TORCH_CHECK_VALUE(kind == "row" || kind == "diagonal",
                    "kind must be 'row' or 'diagonal', got '", std::string(kind), "'");
  check_sampler_sizes(batch, channels, height, width, n_levels, kernel_size, temperature);
  TORCH_CHECK_VALUE(!weights.empty(), "weights is empty");
  Problem p{kind == "diagonal", batch, channels, height, width, n_levels, 0, kernel_size, 0, 0,
            temperature, return_logits};
  check_weights(p, weights);
  SamplerTensors t = sampler_tensors(weights, noise, seed, given, batch, channels, height, width,
                                     n_levels, return_logits);
  if (on_cuda(weights[0], "the PixelRNN sampler")) {
#ifdef PYGEN_WITH_CUDA
    sample_cuda(p, t.weights, t.noise, t.seed, t.given, t.images, t.logits);
#endif
  } else {
    sample_cpu(p, t.weights, t.noise, t.seed, t.given, t.images, t.logits);
  }
  return {t.images, t.logits};
}

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("pixelrnn_sample(Tensor[] weights, Tensor? noise, Tensor? seed, Tensor? given, str kind,"
        " int batch, int channels, int height, int width, int n_levels, int kernel_size,"
        " float temperature, bool return_logits) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("pixelrnn_sample", &sample); }

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("pixelrnn_sample", &sample); }

// A draw has no gradient: outputs never require grad, whatever the weights.
TORCH_LIBRARY_IMPL(pygen, Autograd, m) { m.impl("pixelrnn_sample", torch::CppFunction::makeFallthrough()); }

}  // namespace pygen::pixelrnn
