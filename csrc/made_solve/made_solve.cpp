// The D-step direction of an autoregressive affine flow (MAF sampling, IAF density) as one
// operator: the loop of pygen.layers.MADE.solve, its twin (run there with the pure-PyTorch
// affine), issued from C++ so that each step's dozen small ATen calls skip the Python interpreter.
// It is composed of other operators (CompositeImplicitAutograd): autograd, every device and
// torch.compile come from them, and it has no kernel of its own.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/checks.h"

namespace pygen::made_solve {
namespace {

using AffineFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&,
                                                    const at::Tensor&, const at::Tensor&, int64_t,
                                                    c10::string_view, std::optional<double>, bool);
constexpr int64_t kReadMask = 0;  // pygen.ops.MaskKind.READ

void check_args(const at::Tensor& target, at::TensorList weights, at::TensorList biases,
                at::IntArrayRef bounds, at::IntArrayRef order, const at::Tensor& mask) {
  check_floating(target, "target");
  TORCH_CHECK_VALUE(target.dim() == 2, "target must have shape (N, D), got ", target.sizes());
  const int64_t dim = target.size(1);
  const auto layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(layers >= 2 && static_cast<int64_t>(biases.size()) == layers,
                    "weights and biases must hold one tensor per layer (at least 2), got ", layers,
                    " and ", biases.size());
  for (int64_t i = 0; i < layers; ++i) {
    const std::string at_i = "[" + std::to_string(i) + "]";
    check_same_device(weights[i], ("weights" + at_i).c_str(), target, "target");
    check_same_device(biases[i], ("biases" + at_i).c_str(), target, "target");
    const int64_t in = i == 0 ? dim : weights[i - 1].size(-1);
    TORCH_CHECK_VALUE(weights[i].dim() == 2 && weights[i].size(0) == in,
                      "weights", at_i, " must have shape (", in, ", out), got ", weights[i].sizes());
    TORCH_CHECK_VALUE(biases[i].dim() == 1 && biases[i].size(0) == weights[i].size(1),
                      "biases", at_i, " must have shape (", weights[i].size(1), "), got ",
                      biases[i].sizes());
  }
  TORCH_CHECK_VALUE(weights[layers - 1].size(1) == 2 * dim,
                    "the last layer must have 2 * D = ", 2 * dim,
                    " outputs (log-scale and shift of each input), got ", weights[layers - 1].size(1));
  TORCH_CHECK_VALUE(static_cast<int64_t>(order.size()) == dim && static_cast<int64_t>(bounds.size()) == dim,
                    "order and bounds must have D = ", dim, " entries, got ", order.size(), " and ",
                    bounds.size());
  std::vector<bool> seen(dim, false);
  for (const int64_t d : order) {
    TORCH_CHECK_VALUE(d >= 0 && d < dim && !seen[d], "order must be a permutation of range(", dim,
                      "), got ", order);
    seen[d] = true;
  }
  const int64_t hidden = weights[0].size(1);
  for (int64_t m = 0; m < dim; ++m) {
    TORCH_CHECK_VALUE(bounds[m] >= (m ? bounds[m - 1] : 0) && bounds[m] <= hidden,
                      "bounds must be non-decreasing within [0, ", hidden, "], got ", bounds);
  }
  check_same_device(mask, "mask", target, "target");
  TORCH_CHECK_VALUE(mask.dim() == 1 && mask.size(0) == dim, "mask must have shape (", dim,
                    "), got ", mask.sizes());
}

}  // namespace

// Returns x (N, D) and the MADE's outputs (N, 2, D) at x; see pygen/ops/made_solve.py.
std::tuple<at::Tensor, at::Tensor> made_affine_solve(const at::Tensor& target, at::TensorList weights,
                                                     at::TensorList biases, at::IntArrayRef bounds,
                                                     at::IntArrayRef order, const at::Tensor& mask,
                                                     c10::string_view scale_fn,
                                                     std::optional<double> clamp, bool reverse) {
  check_args(target, weights, biases, bounds, order, mask);
  static const auto affine = c10::Dispatcher::singleton()
                                 .findSchemaOrThrow("pygen::affine_coupling", "")
                                 .typed<AffineFn>();
  const int64_t n = target.size(0), dim = target.size(1);
  const auto layers = static_cast<int64_t>(weights.size());
  const auto acc = at::promote_types(target.scalar_type(), at::kFloat);
  // Pre-activations of every layer from the biases up, updated in place (no product's backward
  // reads them); columns and outputs kept apart and stacked at the end (a write into a tensor
  // that earlier steps read would break their backward).
  std::vector<at::Tensor> pre, columns(dim), outs(dim);
  for (const auto& bias : biases) pre.push_back(bias.to(acc).expand({n, -1}).clone());
  for (int64_t step = 0; step < dim; ++step) {
    if (step > 0) {  // the input filled last step completes the hidden units of degree `step`
      const int64_t filled = order[step - 1], u0 = bounds[step - 1], u1 = bounds[step];
      pre[0].addr_(columns[filled].to(acc), weights[0][filled]);
      for (int64_t i = 1; i < layers && u1 > u0; ++i) {  // (a degree may have no units)
        pre[i].addmm_(at::relu(pre[i - 1].slice(1, u0, u1)), weights[i].slice(0, u0, u1));
      }
    }
    const int64_t d = order[step];
    // Output k of input d is column k * D + d, copied before the next update.
    outs[d] = pre[layers - 1].slice(1, d, std::nullopt, dim).to(target.scalar_type(), false, true);
    auto [y, logdet] = affine.call(target.slice(1, d, d + 1), outs[d].slice(1, 0, 1), outs[d].slice(1, 1, 2),
                                   mask.slice(0, d, d + 1), kReadMask, scale_fn, clamp, reverse);
    columns[d] = y.select(1, 0);
  }
  return {at::stack(columns, 1), at::stack(outs, 2)};
}

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("made_affine_solve(Tensor target, Tensor[] weights, Tensor[] biases, int[] bounds, int[] order,"
        " Tensor mask, str scale_fn, float? clamp, bool reverse) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pygen, CompositeImplicitAutograd, m) { m.impl("made_affine_solve", &made_affine_solve); }

}  // namespace pygen::made_solve
