// Device-independent part of the sampler: argument checks, contiguous copies, outputs, dispatch
// to the CPU or CUDA kernels, and the operator's registration (sampling has no gradient).
#include "pixelcnn/pixelcnn.h"

#include <torch/library.h>

#include "common/checks.h"

namespace pygen::pixelcnn {
namespace {

void check_weight(const at::Tensor& t, const std::string& name, const at::Tensor& ref,
                  at::IntArrayRef shape) {
  check_matches(t, name.c_str(), ref, "weights[0]", shape);
}

// Checks every weight against the shapes the problem implies; fills in layers and hidden.
void check_weights(Problem& p, at::TensorList w) {
  const int64_t n = static_cast<int64_t>(w.size());
  TORCH_CHECK_VALUE(n >= kPerLayer + kHead && (n - kHead) % kPerLayer == 0,
                    "weights must hold 7 tensors per gated layer and 4 for the head, got ", n);
  const at::Tensor& ref = w[0];
  const auto dtype = ref.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                       dtype == at::kBFloat16,
                   "the PixelCNN sampler supports float32, float64, float16 and bfloat16 weights, "
                   "got ", dtype);
  TORCH_CHECK_VALUE(ref.dim() == 2 && ref.size(1) % 2 == 0,
                    "weights[0] (v_w) must have shape (kh * k * C, 2 * hidden), got ", ref.sizes());
  p.layers = (n - kHead) / kPerLayer;
  p.hidden = ref.size(1) / 2;
  const int64_t h = p.hidden, kh = p.kernel / 2 + 1;
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t cin = l == 0 ? p.channels : h;
    const std::string at_l = "weights[" + std::to_string(l * kPerLayer);
    const at::Tensor* lw = &w[l * kPerLayer];
    check_weight(lw[kVW], at_l + "] (v_w of layer " + std::to_string(l) + ")", ref,
                 {kh * p.kernel * cin, 2 * h});
    check_weight(lw[kVB], at_l + " + 1] (v_b)", ref, {p.batch, 2 * h});
    check_weight(lw[kHW], at_l + " + 2] (h_w)", ref, {kh * cin, 2 * h});
    check_weight(lw[kHB], at_l + " + 3] (h_b)", ref, {p.batch, 2 * h});
    check_weight(lw[kLinkW], at_l + " + 4] (link_w)", ref, {2 * h, 2 * h});
    check_weight(lw[kOutW], at_l + " + 5] (out_w)", ref, {h, h});
    check_weight(lw[kOutB], at_l + " + 6] (out_b)", ref, {h});
  }
  const at::Tensor* hw = &w[p.layers * kPerLayer];
  check_weight(hw[kW1], "head w1", ref, {h, h});
  check_weight(hw[kB1], "head b1", ref, {h});
  check_weight(hw[kW2], "head w2", ref, {h, p.channels * p.levels});
  check_weight(hw[kB2], "head b2", ref, {p.channels * p.levels});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sample(at::TensorList weights,
                                          const std::optional<at::Tensor>& noise,
                                          const std::optional<at::Tensor>& seed, int64_t batch,
                                          int64_t channels, int64_t height, int64_t width,
                                          int64_t n_levels, int64_t kernel_size, double temperature,
                                          bool return_logits) {
  TORCH_CHECK_VALUE(batch >= 1 && channels >= 1 && height >= 1 && width >= 1,
                    "batch, channels, height and width must be >= 1, got ", batch, ", ", channels,
                    ", ", height, ", ", width);
  TORCH_CHECK_VALUE(n_levels >= 2, "n_levels must be >= 2, got ", n_levels);
  TORCH_CHECK_VALUE(kernel_size >= 1 && kernel_size % 2 == 1,
                    "kernel_size must be odd and positive, got ", kernel_size);
  TORCH_CHECK_VALUE(temperature > 0 && std::isfinite(temperature),
                    "temperature must be positive and finite, got ", temperature);
  Problem p{batch, channels, height, width, n_levels, 0, kernel_size, 0, temperature, return_logits};
  TORCH_CHECK_VALUE(!weights.empty(), "weights is empty");
  check_weights(p, weights);
  const at::Tensor& ref = weights[0];
  TORCH_CHECK_VALUE(noise.has_value() != seed.has_value(),
                    "exactly one of noise and seed must be given");
  if (noise) {
    check_matches(*noise, "noise", ref, "weights", {batch, channels, height, width});
  } else {
    check_seed(*seed, ref);
  }
  const bool cuda = on_cuda(ref, "the PixelCNN sampler");
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(weights.size());
  for (const auto& t : weights) contiguous.push_back(t.contiguous());
  const at::Tensor noise_c = noise ? noise->contiguous() : at::Tensor();
  const at::Tensor seed_c = seed ? seed->to(ref.device()).contiguous() : at::Tensor();
  at::Tensor images = at::zeros({batch, channels, height, width}, ref.options().dtype(at::kLong));
  at::Tensor logits = return_logits ? at::empty({batch, n_levels, channels, height, width}, ref.options())
                                    : at::empty({0}, ref.options());
  if (cuda) {
#ifdef PYGEN_WITH_CUDA
    const RowPlan plan = plan_cuda_rows(p, ref);
    TORCH_CHECK(plan.smem_bytes <= plan.smem_limit, "the CUDA PixelCNN sampler keeps ", p.layers,
                " layers x hidden ", p.hidden, " of horizontal state in shared memory: ",
                plan.smem_bytes, " bytes, more than this GPU's ", plan.smem_limit,
                "; use method='cached'");
    sample_cuda(p, plan, contiguous, noise_c, seed_c, images, logits);
#endif
  } else {
    sample_cpu(p, contiguous, noise_c, seed_c, images, logits);
  }
  return {images, logits};
}

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("pixelcnn_sample(Tensor[] weights, Tensor? noise, Tensor? seed, int batch, int channels,"
        " int height, int width, int n_levels, int kernel_size, float temperature,"
        " bool return_logits) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("pixelcnn_sample", &sample); }

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("pixelcnn_sample", &sample); }

}  // namespace pygen::pixelcnn
