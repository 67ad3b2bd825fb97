// Device-independent part of the sampler: argument checks, contiguous copies, outputs, dispatch
// to the CPU or CUDA kernels, and the operator's registration (sampling has no gradient).
#include "pixelcnn/pixelcnn.h"

#include <torch/library.h>

#include "common/checks.h"
#include "common/sampler.h"

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

// Per image row, whether every value of every sample is given. The horizontal stack and the head
// feed no later row (the vertical stack sees only the image), so the kernels skip them there and
// copy the given row, unless the logits are asked for, which the skipped rows would not have. The
// vertical stack still runs on every row: the rows below need it (on the CPU it is most of the
// arithmetic; on a GPU the per-value chain of the horizontal stack is most of the time).
std::vector<uint8_t> fully_given_rows(const at::Tensor& given, int64_t height, bool return_logits) {
  std::vector<uint8_t> rows(height, 0);
  if (!given.defined() || return_logits) return rows;
  const at::Tensor full = given.ge(0).transpose(0, 2).reshape({height, -1}).all(1).cpu();
  const bool* f = full.const_data_ptr<bool>();
  for (int64_t i = 0; i < height; ++i) rows[i] = f[i] ? 1 : 0;
  return rows;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> sample(at::TensorList weights,
                                          const std::optional<at::Tensor>& noise,
                                          const std::optional<at::Tensor>& seed,
                                          const std::optional<at::Tensor>& given, int64_t batch,
                                          int64_t channels, int64_t height, int64_t width,
                                          int64_t n_levels, int64_t kernel_size, double temperature,
                                          bool return_logits) {
  check_sampler_sizes(batch, channels, height, width, n_levels, kernel_size, temperature);
  Problem p{batch, channels, height, width, n_levels, 0, kernel_size, 0, temperature, return_logits};
  TORCH_CHECK_VALUE(!weights.empty(), "weights is empty");
  check_weights(p, weights);
  const at::Tensor& ref = weights[0];
  SamplerTensors t = sampler_tensors(weights, noise, seed, given, batch, channels, height, width,
                                     n_levels, return_logits);
  const std::vector<uint8_t> given_rows = fully_given_rows(t.given, height, return_logits);
  const bool cuda = on_cuda(ref, "the PixelCNN sampler");
  if (cuda) {
#ifdef PYGEN_WITH_CUDA
    const RowPlan plan = plan_cuda_rows(p, ref);
    TORCH_CHECK(plan.smem_bytes <= plan.smem_limit, "the CUDA PixelCNN sampler keeps ", p.layers,
                " layers x hidden ", p.hidden, " of horizontal state in shared memory: ",
                plan.smem_bytes, " bytes, more than this GPU's ", plan.smem_limit,
                "; use method='cached'");
    sample_cuda(p, plan, t.weights, t.noise, t.seed, t.given, given_rows, t.images, t.logits);
#endif
  } else {
    sample_cpu(p, t.weights, t.noise, t.seed, t.given, given_rows, t.images, t.logits);
  }
  return {t.images, t.logits};
}

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("pixelcnn_sample(Tensor[] weights, Tensor? noise, Tensor? seed, Tensor? given, int batch,"
        " int channels, int height, int width, int n_levels, int kernel_size, float temperature,"
        " bool return_logits) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) { m.impl("pixelcnn_sample", &sample); }

TORCH_LIBRARY_IMPL(pygen, CUDA, m) { m.impl("pixelcnn_sample", &sample); }

// A draw has no gradient: outputs never require grad, whatever the weights.
TORCH_LIBRARY_IMPL(pygen, Autograd, m) { m.impl("pixelcnn_sample", torch::CppFunction::makeFallthrough()); }

}  // namespace pygen::pixelcnn
