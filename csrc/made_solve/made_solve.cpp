// The D-step direction of an autoregressive affine flow (MAF sampling, IAF density) as one
// operator, pygen::made_affine_solve, on one of two paths:
// - the fused kernels, pygen::_made_affine_solve_fused and its backward, bound to autograd here:
//   on the CPU (cpu.cpp), and on CUDA (cuda.cu) when PYGEN_MADE_SOLVE_CUDA=1;
// - elsewhere, pygen::_made_affine_solve_composite: the loop of
//   pygen.layers.MADE.solve, its twin (run there with the pure-PyTorch affine), issued from C++ and
//   composed of ATen ops and pygen::affine_coupling, which give it autograd, every device and
//   torch.compile (CompositeImplicitAutograd); its dozen small ATen calls per step cost ~20x the
//   step's arithmetic on the CPU.
#include <ATen/ATen.h>
#include <ATen/LegacyBatchedTensorImpl.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "affine_coupling/affine_coupling.h"
#include "common/autocast.h"
#include "common/backward_dispatch.h"
#include "common/checks.h"
#include "made_solve/made_solve.h"

namespace pygen::made_solve {
namespace {

using AffineFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const std::optional<at::Tensor>&,
                                                    const at::Tensor&, const at::Tensor&, int64_t,
                                                    c10::string_view, std::optional<double>, bool);
using SolveFn = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, at::TensorList, at::TensorList,
                                                   const at::Tensor&, at::IntArrayRef, at::IntArrayRef,
                                                   const at::Tensor&, c10::string_view, std::optional<double>,
                                                   bool);
constexpr int64_t kReadMask = 0;  // pygen.ops.MaskKind.READ

void check_args(const at::Tensor& target, at::TensorList weights, at::TensorList biases,
                const at::Tensor& units, at::IntArrayRef bounds, at::IntArrayRef order,
                const at::Tensor& mask) {
  check_floating(target, "target");
  TORCH_CHECK_VALUE(target.dim() == 2 && target.size(1) > 0, "target must have shape (N, D) with D > 0, got ",
                    target.sizes());
  const int64_t dim = target.size(1);
  const auto layers = static_cast<int64_t>(weights.size());
  TORCH_CHECK_VALUE(layers >= 2 && static_cast<int64_t>(biases.size()) == layers,
                    "weights and biases must hold one tensor per layer (at least 2), got ", layers,
                    " and ", biases.size());
  TORCH_CHECK_VALUE(weights[0].dim() == 2 && weights[0].size(1) == dim,
                    "weights[0] must have shape (hidden, D = ", dim, "), got ", weights[0].sizes());
  const int64_t hidden = weights[0].size(0);
  for (int64_t i = 0; i < layers; ++i) {
    const std::string at_i = "[" + std::to_string(i) + "]";
    check_floating(weights[i], ("weights" + at_i).c_str());
    check_floating(biases[i], ("biases" + at_i).c_str());
    check_same_device(weights[i], ("weights" + at_i).c_str(), target, "target");
    check_same_device(biases[i], ("biases" + at_i).c_str(), target, "target");
    // Every hidden layer has the same units: `units` and `bounds` index all of them.
    const int64_t in = i == 0 ? dim : hidden, out = i == layers - 1 ? 2 * dim : hidden;
    TORCH_CHECK_VALUE(weights[i].dim() == 2 && weights[i].size(0) == out && weights[i].size(1) == in,
                      "weights", at_i, " must have shape (", out, ", ", in, "), got ", weights[i].sizes(),
                      i == layers - 1 ? " (the last layer has 2 * D outputs: log-scale and shift of each input)"
                                      : " (every hidden layer has the first one's width)");
    TORCH_CHECK_VALUE(biases[i].dim() == 1 && biases[i].size(0) == out, "biases", at_i, " must have shape (",
                      out, "), got ", biases[i].sizes());
  }
  check_same_device(units, "units", target, "target");
  TORCH_CHECK_TYPE(units.scalar_type() == at::kLong, "units must be int64, got ", units.scalar_type());
  TORCH_CHECK_VALUE(units.dim() == 1 && units.size(0) == hidden, "units must have shape (", hidden,
                    "), got ", units.sizes());
  TORCH_CHECK_VALUE(static_cast<int64_t>(order.size()) == dim && static_cast<int64_t>(bounds.size()) == dim,
                    "order and bounds must have D = ", dim, " entries, got ", order.size(), " and ",
                    bounds.size());
  std::vector<bool> seen(dim, false);
  for (const int64_t d : order) {
    TORCH_CHECK_VALUE(d >= 0 && d < dim && !seen[d], "order must be a permutation of range(", dim,
                      "), got ", order);
    seen[d] = true;
  }
  for (int64_t m = 0; m < dim; ++m) {
    TORCH_CHECK_VALUE(bounds[m] >= (m ? bounds[m - 1] : 0) && bounds[m] <= hidden,
                      "bounds must be non-decreasing within [0, ", hidden, "], got ", bounds);
  }
  check_same_device(mask, "mask", target, "target");
  TORCH_CHECK_TYPE(!at::isComplexType(mask.scalar_type()), "mask must be a real or bool tensor, got ",
                   mask.scalar_type());
  TORCH_CHECK_VALUE(mask.dim() == 1 && mask.size(0) == dim, "mask must have shape (", dim,
                    "), got ", mask.sizes());
}

// The loop of MADE.solve over ATen ops and pygen::affine_coupling.
std::tuple<at::Tensor, at::Tensor> solve_composite(const at::Tensor& target, at::TensorList weights,
                                                   at::TensorList biases, const at::Tensor& units,
                                                   at::IntArrayRef bounds, at::IntArrayRef order,
                                                   const at::Tensor& mask, c10::string_view scale_fn,
                                                   std::optional<double> clamp, bool reverse) {
  check_args(target, weights, biases, units, bounds, order, mask);
  static const auto affine = op_handle<AffineFn>("pygen::affine_coupling");
  const int64_t n = target.size(0), dim = target.size(1);
  const auto layers = static_cast<int64_t>(weights.size());
  const auto acc = at::promote_types(target.scalar_type(), at::kFloat);
  // Hidden units sorted by degree, so that a degree's units are one block, and each weight
  // transposed to (in, out), so that an input's (unit's) weights are one row.
  std::vector<at::Tensor> weights_t;
  for (int64_t i = 0; i < layers; ++i) {
    at::Tensor w = weights[i].to(acc);
    if (i < layers - 1) w = w.index_select(0, units);
    if (i > 0) w = w.index_select(1, units);
    weights_t.push_back(w.t());
  }
  // Pre-activations of every layer from the biases up, updated in place (no product's backward
  // reads them); columns and outputs kept apart and stacked at the end (a write into a tensor
  // that earlier steps read would break their backward).
  std::vector<at::Tensor> pre, columns(dim), outs(dim);
  for (int64_t i = 0; i < layers; ++i) {
    const at::Tensor bias = i < layers - 1 ? biases[i].index_select(0, units) : biases[i];
    pre.push_back(bias.to(acc).expand({n, -1}).clone());
  }
  for (int64_t step = 0; step < dim; ++step) {
    if (step > 0) {  // the input filled last step completes the hidden units of degree `step`
      const int64_t filled = order[step - 1], u0 = bounds[step - 1], u1 = bounds[step];
      pre[0].addr_(columns[filled].to(acc), weights_t[0][filled]);
      for (int64_t i = 1; i < layers && u1 > u0; ++i) {  // (a degree may have no units)
        pre[i].addmm_(at::relu(pre[i - 1].slice(1, u0, u1)), weights_t[i].slice(0, u0, u1));
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

// The kernels' view of checked arguments (the fused path only: it reads the values).
Solve make_solve(const at::Tensor& target, at::TensorList weights, at::TensorList biases, const at::Tensor& units,
                 at::IntArrayRef bounds, at::IntArrayRef order, const at::Tensor& mask, c10::string_view scale_fn,
                 std::optional<double> clamp, bool reverse) {
  check_args(target, weights, biases, units, bounds, order, mask);
  Solve s;
  s.rows = target.size(0);
  s.dim = target.size(1);
  s.hidden = weights[0].size(0);
  const auto acc = at::promote_types(target.scalar_type(), at::kFloat);
  for (const auto& w : weights) s.weights.push_back(w.to(acc).contiguous());
  for (const auto& b : biases) s.biases.push_back(b.to(acc).contiguous());
  // A value check only the fused path can make (the composite runs on fake tensors under
  // torch.compile); there index_select rejects indices out of range.
  // units and mask live on the target's device; the plan is made on the host.
  const at::Tensor units_c = units.to(at::kCPU).contiguous();
  s.units.assign(units_c.const_data_ptr<int64_t>(), units_c.const_data_ptr<int64_t>() + s.hidden);
  std::vector<bool> listed(s.hidden, false);
  for (const int64_t u : s.units) {
    TORCH_CHECK_VALUE(u >= 0 && u < s.hidden && !listed[u], "units must be a permutation of range(", s.hidden,
                      "), got an entry ", u, " out of range or repeated");
    listed[u] = true;
  }
  s.bounds.assign(bounds.begin(), bounds.end());
  s.order.assign(order.begin(), order.end());
  const auto grow = [](Span a, int64_t i) {
    return a.hi > a.lo ? Span{std::min(a.lo, i), std::max(a.hi, i + 1)} : Span{i, i + 1};
  };
  Span filled, computed;
  for (int64_t m = 0, j = 0; m < s.dim; ++m) {
    if (m > 0) filled = grow(filled, s.order[m - 1]);
    for (; j < s.bounds[m]; ++j) computed = grow(computed, s.units[j]);
    s.filled.push_back(filled);
    s.computed.push_back(computed);
  }
  const at::Tensor keep = mask.ne(0).to(at::kCPU, at::kByte).contiguous();
  s.keep.assign(keep.const_data_ptr<uint8_t>(), keep.const_data_ptr<uint8_t>() + s.dim);
  s.scale_fn = affine_coupling::parse_scale_fn(true, scale_fn);
  s.clamp = affine_coupling::parse_clamp(s.scale_fn, clamp);
  s.reverse = reverse;
  return s;
}

// pygen::_made_affine_solve_fused on the CPU.
std::tuple<at::Tensor, at::Tensor> fused_forward(const at::Tensor& target, at::TensorList weights,
                                                 at::TensorList biases, const at::Tensor& units,
                                                 at::IntArrayRef bounds, at::IntArrayRef order, const at::Tensor& mask,
                                                 c10::string_view scale_fn, std::optional<double> clamp,
                                                 bool reverse) {
  const Solve s = make_solve(target, weights, biases, units, bounds, order, mask, scale_fn, clamp, reverse);
  const at::Tensor target_c = target.contiguous();
  at::Tensor x = at::empty_like(target_c), params = at::empty({s.rows, 2, s.dim}, target.options());
  if (s.rows == 0) return {x, params};
  if (on_cuda(target, "the fused MADE solve")) {
#ifdef PYGEN_WITH_CUDA
    solve_cuda(s, target_c, x, params);
#endif
  } else {
    solve_cpu(s, target_c, x, params);
  }
  return {x, params};
}

// When each value of the solve exists and when each weight row reads: input j from the step
// after the one that fills it, a hidden unit from the step of its degree (units of degree 0 or
// past the last bound are never computed and stay zero); unit u reads at the step of its degree,
// output row k D + d at the step of input d. Entry (row, v) of a weight is read, holding v's
// value, iff available(v) <= step(row): the weights' gradients are zero elsewhere, as the fused
// forward never reads those entries with a value.
struct Steps {
  at::Tensor unit_step, unit_available, input_available, output_step;  // int64, on the solve's device

  // Built on the CPU and moved once, so that a CUDA backward copies the four vectors once per call.
  Steps(const Solve& s, at::Device device) {
    const auto opts = at::TensorOptions().dtype(at::kLong);
    unit_step = at::full({s.hidden}, -1, opts);
    input_available = at::empty({s.dim}, opts);
    output_step = at::empty({2 * s.dim}, opts);
    auto unit = unit_step.accessor<int64_t, 1>();
    auto input = input_available.accessor<int64_t, 1>();
    auto output = output_step.accessor<int64_t, 1>();
    for (int64_t m = 0; m < s.dim; ++m) {
      if (m > 0) {
        for (int64_t j = s.bounds[m - 1]; j < s.bounds[m]; ++j) unit[s.units[j]] = m;
      }
      const int64_t d = s.order[m];
      input[d] = m + 1;
      output[d] = output[s.dim + d] = m;
    }
    unit_available = unit_step.where(unit_step > 0, s.dim + 1);
    for (at::Tensor* v : {&unit_step, &unit_available, &input_available, &output_step}) *v = v->to(device);
  }

  // Zeroes the entries of layer i's (out, in) t, contiguous, that the forward does not read.
  void keep_read(int64_t i, int64_t layers, at::Tensor& t) const {
    const at::Tensor& available = i == 0 ? input_available : unit_available;
    const at::Tensor& step = i == layers - 1 ? output_step : unit_step;
    if (t.is_cpu()) {
      zero_unread_cpu(t, available, step);
    } else {
      t.masked_fill_(available.unsqueeze(0).gt(step.unsqueeze(1)), 0);
    }
  }
};

// pygen::_made_affine_solve_fused_backward: the gradients of target, weights and biases (in their
// dtypes) from those of x and params. The MADE's activations at x come from one product per layer
// over all samples (the forward's values, to rounding); the device's kernel runs the D steps
// backwards for the gradients of target and of every pre-activation; each weight's gradient is
// then one product over all samples, masked to the entries the forward reads (Steps).
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> fused_backward(
    const std::optional<at::Tensor>& grad_x, const std::optional<at::Tensor>& grad_params, const at::Tensor& target,
    const at::Tensor& x, const at::Tensor& params, at::TensorList weights, at::TensorList biases,
    const at::Tensor& units, at::IntArrayRef bounds, at::IntArrayRef order, const at::Tensor& mask,
    c10::string_view scale_fn, std::optional<double> clamp, bool reverse) {
  // A backward run inside an autocast region would cast the products below to 16 bits.
  const AutocastOff autocast_off;
  const Solve s = make_solve(target, weights, biases, units, bounds, order, mask, scale_fn, clamp, reverse);
  check_matches(x, "x", target, "target", target.sizes());
  check_matches(params, "params", target, "target", {s.rows, 2, s.dim});
  if (grad_x) check_matches(*grad_x, "grad_x", target, "target", target.sizes());
  if (grad_params) check_matches(*grad_params, "grad_params", target, "target", {s.rows, 2, s.dim});
  const auto layers = static_cast<int64_t>(s.weights.size()), last = layers - 1;
  const auto opts = s.weights[0].options();
  const Steps steps(s, target.device());
  std::vector<at::Tensor> read;  // each weight with only the entries the forward reads
  for (int64_t i = 0; i < layers; ++i) {
    read.push_back(s.weights[i].clone());
    steps.keep_read(i, layers, read[i]);
  }
  const at::Tensor never = steps.unit_step.le(0);
  const at::Tensor x_acc = x.to(opts.dtype()).contiguous();
  // Through the read entries only, so that a weight outside them (a finite difference of a
  // masked-out entry) changes the activations no more than it changes the forward.
  at::Tensor acts = at::empty({last, s.rows, s.hidden}, opts);
  for (int64_t i = 0; i < last; ++i) {
    at::Tensor a = acts.select(0, i);
    at::addmm_out(a, s.biases[i], i == 0 ? x_acc : acts.select(0, i - 1), read[i].t());
    a.relu_().masked_fill_(never, 0);
  }
  at::Tensor grad_target = at::empty_like(target, at::MemoryFormat::Contiguous);
  at::Tensor g_units = at::zeros_like(acts), g_out = at::zeros({s.rows, 2 * s.dim}, opts);
  if (s.rows > 0) {
    const auto contiguous = [](const std::optional<at::Tensor>& t) { return t ? t->contiguous() : at::Tensor(); };
    const at::Tensor target_c = target.contiguous(), params_c = params.contiguous();
    if (on_cuda(target, "the fused MADE solve's backward")) {
#ifdef PYGEN_WITH_CUDA
      solve_backward_cuda(s, contiguous(grad_x), contiguous(grad_params), target_c, params_c, acts, grad_target,
                          g_units, g_out);
#endif
    } else {
      solve_backward_cpu(s, contiguous(grad_x), contiguous(grad_params), target_c, params_c, acts, grad_target,
                         g_units, g_out);
    }
  }
  std::vector<at::Tensor> grad_weights, grad_biases;
  for (int64_t i = 0; i < layers; ++i) {
    const at::Tensor g = i == last ? g_out : g_units.select(0, i);
    const at::Tensor below = i == 0 ? x_acc : acts.select(0, i - 1);
    at::Tensor grad = g.t().mm(below);
    steps.keep_read(i, layers, grad);
    grad_weights.push_back(grad.to(weights[i].scalar_type()));
    grad_biases.push_back(g.sum(0).to(biases[i].scalar_type()));
  }
  return {grad_target, grad_weights, grad_biases};
}

// The backward under the legacy vmap, which `torch.autograd.grad(..., is_grads_batched=True)` runs
// backward ops in (its fallback refuses ops with tensor lists): the op once per entry of the
// batched output gradients, its results stacked into batched tensors. Only those gradients may be
// batched there.
std::tuple<at::Tensor, std::vector<at::Tensor>, std::vector<at::Tensor>> fused_backward_batched(
    const std::optional<at::Tensor>& grad_x, const std::optional<at::Tensor>& grad_params, const at::Tensor& target,
    const at::Tensor& x, const at::Tensor& params, at::TensorList weights, at::TensorList biases,
    const at::Tensor& units, at::IntArrayRef bounds, at::IntArrayRef order, const at::Tensor& mask,
    c10::string_view scale_fn, std::optional<double> clamp, bool reverse) {
  std::vector<const at::Tensor*> others{&target, &x, &params, &units, &mask};
  for (const at::Tensor& t : weights) others.push_back(&t);
  for (const at::Tensor& t : biases) others.push_back(&t);
  for (const at::Tensor* t : others)
    TORCH_CHECK_NOT_IMPLEMENTED(!at::isBatchedTensor(*t),
                                "the fused MADE solve's backward runs batched over its output gradients only "
                                "(torch.autograd.grad's is_grads_batched)");
  std::optional<at::BatchDim> batch;  // the one batch dimension the output gradients share
  int64_t size = 0;
  for (const auto& g : {grad_x, grad_params}) {
    const at::BatchedTensorImpl* b = g ? at::maybeGetBatchedImpl(*g) : nullptr;
    if (b == nullptr) continue;
    TORCH_CHECK_NOT_IMPLEMENTED(b->bdims().size() == 1 && (!batch || batch->level() == b->bdims()[0].level()),
                                "the fused MADE solve's backward runs under one level of vmap only");
    batch = b->bdims()[0];
    size = b->value().size(batch->dim());
  }
  TORCH_INTERNAL_ASSERT(batch, "a batched kernel called without a batched argument");
  // The entry i of a gradient: its physical tensor's slice where it is batched.
  const auto entry = [&](const std::optional<at::Tensor>& g, int64_t i) -> std::optional<at::Tensor> {
    const at::BatchedTensorImpl* b = g ? at::maybeGetBatchedImpl(*g) : nullptr;
    return b ? std::optional<at::Tensor>(b->value().select(b->bdims()[0].dim(), i)) : g;
  };
  static const auto op = op_handle<decltype(fused_backward)>("pygen::_made_affine_solve_fused_backward");
  std::vector<at::Tensor> grad_target;
  std::vector<std::vector<at::Tensor>> grad_weights(weights.size()), grad_biases(biases.size());
  for (int64_t i = 0; i < size; ++i) {
    auto [gt, gw, gb] = op.call(entry(grad_x, i), entry(grad_params, i), target, x, params, weights, biases, units,
                                bounds, order, mask, scale_fn, clamp, reverse);
    grad_target.push_back(gt);
    for (size_t k = 0; k < gw.size(); ++k) grad_weights[k].push_back(gw[k]);
    for (size_t k = 0; k < gb.size(); ++k) grad_biases[k].push_back(gb[k]);
  }
  const auto batched = [&](at::TensorList entries) {
    return at::makeBatched(at::stack(entries), {at::BatchDim(batch->level(), 0)});
  };
  std::vector<at::Tensor> out_weights, out_biases;
  for (const auto& g : grad_weights) out_weights.push_back(batched(g));
  for (const auto& g : grad_biases) out_biases.push_back(batched(g));
  return {batched(grad_target), out_weights, out_biases};
}

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class FusedSolveFunction : public torch::autograd::Function<FusedSolveFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& target, at::TensorList weights,
                               at::TensorList biases, const at::Tensor& units, at::IntArrayRef bounds,
                               at::IntArrayRef order, const at::Tensor& mask, c10::string_view scale_fn,
                               std::optional<double> clamp, bool reverse) {
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined
    static const auto op = op_handle<SolveFn>("pygen::_made_affine_solve_fused");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [x, params] = op.call(target, weights, biases, units, bounds, order, mask, scale_fn, clamp, reverse);
    variable_list saved{target, x, params, units, mask};
    saved.insert(saved.end(), weights.begin(), weights.end());
    saved.insert(saved.end(), biases.begin(), biases.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["layers"] = static_cast<int64_t>(weights.size());
    ctx->saved_data["bounds"] = bounds;
    ctx->saved_data["order"] = order;
    ctx->saved_data["scale_fn"] = std::string(scale_fn);
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["reverse"] = reverse;
    return {x, params};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<decltype(fused_backward)>("pygen::_made_affine_solve_fused_backward");
    const auto saved = ctx->get_saved_variables();
    const int64_t layers = ctx->saved_data["layers"].toInt();
    // One gradient per argument: target, each weight, each bias, then 7 that have none.
    variable_list out(1 + 2 * layers + 7);
    if (!grads[0].defined() && !grads[1].defined()) return out;
    const std::vector<at::Tensor> weights(saved.begin() + 5, saved.begin() + 5 + layers);
    const std::vector<at::Tensor> biases(saved.begin() + 5 + layers, saved.end());
    const auto optional_of = [](const at::Tensor& t) {
      return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
    };
    const std::vector<int64_t> bounds = ctx->saved_data["bounds"].toIntVector();
    const std::vector<int64_t> order = ctx->saved_data["order"].toIntVector();
    const std::string scale_fn = ctx->saved_data["scale_fn"].toStringRef();
    const BackwardDispatch dispatch;
    auto [grad_target, grad_weights, grad_biases] =
        op.call(optional_of(grads[0]), optional_of(grads[1]), saved[0], saved[1], saved[2], weights, biases,
                saved[3], bounds, order, saved[4], scale_fn, ctx->saved_data["clamp"].toOptional<double>(),
                ctx->saved_data["reverse"].toBool());
    out[0] = grad_target;
    for (int64_t i = 0; i < layers; ++i) {
      out[1 + i] = grad_weights[i];
      out[1 + layers + i] = grad_biases[i];
    }
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> fused_autograd(const at::Tensor& target, at::TensorList weights,
                                                  at::TensorList biases, const at::Tensor& units,
                                                  at::IntArrayRef bounds, at::IntArrayRef order,
                                                  const at::Tensor& mask, c10::string_view scale_fn,
                                                  std::optional<double> clamp, bool reverse) {
  const auto out =
      FusedSolveFunction::apply(target, weights, biases, units, bounds, order, mask, scale_fn, clamp, reverse);
  return {out[0], out[1]};
}

}  // namespace

// Whether the CUDA fused kernels were asked for (PYGEN_MADE_SOLVE_CUDA=1): the forward passes its
// tests and memcheck on an H200 (2026-11-27), the backward has run only emulated on the CPU
// (scripts/emulate_cuda.py); both run only when asked until a GPU run has tested and timed them
// against the composite loop (benchmarks/NOTES.md).
bool cuda_fused_enabled() {
  const char* flag = std::getenv("PYGEN_MADE_SOLVE_CUDA");
  return flag != nullptr && std::string(flag) == "1";
}

// Returns x (N, D) and the MADE's outputs (N, 2, D) at x; see pygen/ops/made_solve.py. The fused
// kernels on the CPU, and on CUDA when asked for; else the composite loop. Each checks the
// arguments.
std::tuple<at::Tensor, at::Tensor> made_affine_solve(const at::Tensor& target, at::TensorList weights,
                                                     at::TensorList biases, const at::Tensor& units,
                                                     at::IntArrayRef bounds, at::IntArrayRef order,
                                                     const at::Tensor& mask,
                                                     c10::string_view scale_fn,
                                                     std::optional<double> clamp, bool reverse) {
  const bool fused = target.is_cpu() || (target.is_cuda() && cuda_fused_enabled());
  const char* path = fused ? "pygen::_made_affine_solve_fused" : "pygen::_made_affine_solve_composite";
  const auto op = op_handle<SolveFn>(path);
  return op.call(target, weights, biases, units, bounds, order, mask, scale_fn, clamp, reverse);
}

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("made_affine_solve(Tensor target, Tensor[] weights, Tensor[] biases, Tensor units, int[] bounds,"
        " int[] order, Tensor mask, str scale_fn, float? clamp, bool reverse) -> (Tensor, Tensor)");
  m.def("_made_affine_solve_composite(Tensor target, Tensor[] weights, Tensor[] biases, Tensor units,"
        " int[] bounds, int[] order, Tensor mask, str scale_fn, float? clamp, bool reverse)"
        " -> (Tensor, Tensor)");
  m.def("_made_affine_solve_fused(Tensor target, Tensor[] weights, Tensor[] biases, Tensor units,"
        " int[] bounds, int[] order, Tensor mask, str scale_fn, float? clamp, bool reverse)"
        " -> (Tensor, Tensor)");
  m.def("_made_affine_solve_fused_backward(Tensor? grad_x, Tensor? grad_params, Tensor target, Tensor x,"
        " Tensor params, Tensor[] weights, Tensor[] biases, Tensor units, int[] bounds, int[] order,"
        " Tensor mask, str scale_fn, float? clamp, bool reverse) -> (Tensor, Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(pygen, CompositeImplicitAutograd, m) {
  m.impl("made_affine_solve", &made_affine_solve);
  m.impl("_made_affine_solve_composite", &solve_composite);
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("_made_affine_solve_fused", &fused_forward);
  m.impl("_made_affine_solve_fused_backward", &fused_backward);
}

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("_made_affine_solve_fused", &fused_forward);
  m.impl("_made_affine_solve_fused_backward", &fused_backward);
}

TORCH_LIBRARY_IMPL(pygen, Autograd, m) { m.impl("_made_affine_solve_fused", &fused_autograd); }

TORCH_LIBRARY_IMPL(pygen, Batched, m) { m.impl("_made_affine_solve_fused_backward", &fused_backward_batched); }

}  // namespace pygen::made_solve
