// The ops pygen::affine_coupling and pygen::affine_coupling_stacked: argument checks, the mask
// geometry, the layouts the kernels read (NHWC views of a channels-last x; log_scale and shift in
// place where their samples, or a channels-last x's pixels, are contiguous), contiguous copies,
// output allocation, dispatch to the CPU or CUDA kernels, and their registration with autograd (in
// C++, for the dispatcher's few microseconds of overhead per call; see reparam_kl.cpp).
#include "affine_coupling/affine_coupling.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "common/autocast.h"
#include "common/backward_dispatch.h"
#include "common/checks.h"
#include "common/rows.h"

namespace pygen::affine_coupling {
namespace {

constexpr int64_t kMaskKindCodes = 5;  // read, checkerboard x 2 parities, channel x 2 parities

void check_x(const at::Tensor& x) {
  check_floating(x, "x");
  TORCH_CHECK_VALUE(x.dim() >= 2, "x must have a batch dimension and at least one more, got shape ", x.sizes());
}

void check_mask(const at::Tensor& mask, const at::Tensor& x) {
  check_same_device(mask, "mask", x, "x");
  TORCH_CHECK_TYPE(!at::isComplexType(mask.scalar_type()), "mask must be a real or bool tensor, got ",
                   mask.scalar_type());
  bool broadcastable = mask.dim() <= x.dim();
  for (int64_t d = 1; broadcastable && d <= mask.dim(); ++d) {
    broadcastable = mask.size(-d) == 1 || mask.size(-d) == x.size(-d);
  }
  TORCH_CHECK_VALUE(broadcastable, "mask of shape ", mask.sizes(), " does not broadcast to x of shape ",
                    x.sizes());
}

// Checks shared by forward and backward; returns the kernel view of the problem.
Problem check_inputs(const at::Tensor& x, const std::optional<at::Tensor>& log_scale, const at::Tensor& shift,
                     const at::Tensor& mask, int64_t mask_kind, c10::string_view scale_fn,
                     std::optional<double> clamp, bool reverse) {
  check_x(x);
  if (log_scale) check_matches(*log_scale, "log_scale", x, "x", x.sizes());
  check_matches(shift, "shift", x, "x", x.sizes());
  check_mask(mask, x);
  TORCH_CHECK_VALUE(mask_kind >= 0 && mask_kind < kMaskKindCodes, "mask_kind must be in [0, ",
                    kMaskKindCodes, "), got ", mask_kind);
  Problem p{};
  p.rows = x.size(0);
  p.row_len = p.rows == 0 ? 0 : x.numel() / p.rows;
  TORCH_CHECK_VALUE(p.row_len < std::numeric_limits<int32_t>::max(),
                    "each sample must have fewer than 2^31 elements, got ", p.row_len);
  p.scale_fn = parse_scale_fn(log_scale.has_value(), scale_fn);
  p.clamp = parse_clamp(p.scale_fn, clamp);
  p.reverse = reverse;
  p.mask_kind = static_cast<MaskKind>((mask_kind + 1) / 2);
  p.parity = mask_kind == 0 ? 0 : (mask_kind + 1) % 2;
  p.width = x.size(-1);
  p.height = x.dim() >= 3 ? x.size(-2) : 1;
  const int64_t channels = x.size(1);
  p.split = channels == 0 ? 0 : (channels / 2) * (p.row_len / channels);
  const bool per_sample = mask.dim() == x.dim() && mask.size(0) != 1;
  p.mask_row_stride = per_sample ? p.row_len : 0;
  p.param_grad_stride = p.row_len;
  p.param_run = p.param_run_stride = p.row_len;
  return p;
}

// The shape of params for x: twice its channels.
void check_params(const at::Tensor& x, const at::Tensor& params) {
  check_x(x);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[1] *= 2;
  check_matches(params, "params", x, "x", shape);
}

// The mask as the kernels read it (kRead only): uint8, one row per sample or one shared row.
at::Tensor kernel_mask(const Problem& p, const at::Tensor& mask, const at::Tensor& x) {
  if (p.mask_kind != MaskKind::kRead) return at::Tensor();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  if (p.mask_row_stride == 0) shape[0] = 1;
  return mask.ne(0).to(at::kByte).expand(shape).contiguous();
}

// The operands as the kernels take them. A 4-d x stored channels-last (and not also contiguous,
// as when C or H * W is 1) runs on its NHWC view, contiguous there, and what the op returns of
// x's shape keeps that layout, as an elementwise op's would; the patterns the kernels compute
// follow NCHW positions, so the permuted mask is read.
struct Operands {
  Problem p;
  bool nhwc;
  at::Tensor x, log_scale, shift, mask;

  at::Tensor view(const at::Tensor& t) const { return nhwc ? t.permute({0, 2, 3, 1}) : t; }
  at::Tensor returned(const at::Tensor& t) const { return nhwc ? t.permute({0, 3, 1, 2}) : t; }
  int64_t channel_dim() const { return nhwc ? 3 : 1; }
};

// x and the mask; log_scale and shift follow from set_params or set_stacked_params.
Operands x_operands(Problem p, const at::Tensor& x, const at::Tensor& mask) {
  const bool nhwc = x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  Operands o{p, nhwc};
  at::Tensor mask_v = mask;
  if (nhwc) {
    o.p.mask_kind = MaskKind::kRead;
    o.p.parity = 0;
    std::vector<int64_t> shape(4 - mask.dim(), 1);  // broadcastable to x: as many dims or fewer
    shape.insert(shape.end(), mask.sizes().begin(), mask.sizes().end());
    mask_v = o.view(mask.reshape(shape));
  }
  o.x = o.view(x).contiguous();
  o.mask = kernel_mask(o.p, mask_v, o.x);
  return o;
}

// log_scale and shift read where their samples are contiguous, else copied.
void set_params(Operands& o, const std::optional<at::Tensor>& log_scale, const at::Tensor& shift) {
  o.shift = rows_in_place(o.view(shift), 1, &o.p.shift_stride);
  if (log_scale) o.log_scale = rows_in_place(o.view(*log_scale), 1, &o.p.log_scale_stride);
}

// log_scale and shift the halves of params' channels: read in place as chunks (NCHW) or, for a
// channels-last x, as runs of each pixel's channels (params made channels-last where it is not).
void set_stacked_params(Operands& o, const at::Tensor& params) {
  const int64_t c = params.size(1) / 2;
  if (!o.nhwc) {
    set_params(o, params.narrow(1, 0, c), params.narrow(1, c, c));
    return;
  }
  const at::Tensor v = o.view(params).contiguous();
  o.log_scale = v.narrow(3, 0, c);
  o.shift = v.narrow(3, c, c);
  o.p.log_scale_stride = o.p.shift_stride = 2 * o.p.row_len;
  o.p.param_run = c;
  o.p.param_run_stride = 2 * c;
}

// The checked operands of pygen::affine_coupling and its backward.
Operands operands(const at::Tensor& x, const std::optional<at::Tensor>& log_scale, const at::Tensor& shift,
                  const at::Tensor& mask, int64_t mask_kind, c10::string_view scale_fn, std::optional<double> clamp,
                  bool reverse) {
  Operands o = x_operands(check_inputs(x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse), x, mask);
  set_params(o, log_scale, shift);
  return o;
}

// The same for pygen::affine_coupling_stacked and its backward.
Operands stacked_operands(const at::Tensor& x, const at::Tensor& params, const at::Tensor& mask, int64_t mask_kind,
                          c10::string_view scale_fn, std::optional<double> clamp, bool reverse) {
  check_params(x, params);
  const int64_t c = x.size(1);
  const Problem p = check_inputs(x, params.narrow(1, 0, c), params.narrow(1, c, c), mask, mask_kind, scale_fn,
                                 clamp, reverse);
  Operands o = x_operands(p, x, mask);
  set_stacked_params(o, params);
  return o;
}

std::tuple<at::Tensor, at::Tensor> forward_of(const Operands& o) {
  at::Tensor y = at::empty_like(o.x);
  at::Tensor logdet = at::zeros({o.p.rows}, o.x.options().dtype(sum_dtype(o.x)));
  if (y.numel() == 0) return {o.returned(y), logdet};
  if (on_cuda(o.x, "affine_coupling")) {
#ifdef PYGEN_WITH_CUDA
    forward_cuda(o.p, o.x, o.log_scale, o.shift, o.mask, y, logdet);
#endif
  } else {
    forward_cpu(o.p, o.x, o.log_scale, o.shift, o.mask, y, logdet);
  }
  return {o.returned(y), logdet};
}

// The backward kernels into grad_log_scale and grad_shift (kernel views, rows o.p.param_grad_stride
// apart, given by the caller); returns grad_x as the op returns it.
at::Tensor backward_into(const Operands& o, const std::optional<at::Tensor>& grad_y,
                         const std::optional<at::Tensor>& grad_logdet, at::Tensor& grad_log_scale,
                         at::Tensor& grad_shift) {
  // An absent gradient is zero; the kernels always read both.
  const at::Tensor grad_y_c = grad_y ? o.view(*grad_y).contiguous() : at::zeros_like(o.x);
  const at::Tensor grad_logdet_c =
      grad_logdet ? grad_logdet->contiguous() : at::zeros({o.p.rows}, o.x.options().dtype(sum_dtype(o.x)));
  at::Tensor grad_x = at::empty_like(o.x);
  if (grad_x.numel() == 0) return o.returned(grad_x);
  if (on_cuda(o.x, "affine_coupling")) {
#ifdef PYGEN_WITH_CUDA
    backward_cuda(o.p, grad_y_c, grad_logdet_c, o.x, o.log_scale, o.shift, o.mask, grad_x, grad_log_scale,
                  grad_shift);
#endif
  } else {
    backward_cpu(o.p, grad_y_c, grad_logdet_c, o.x, o.log_scale, o.shift, o.mask, grad_x, grad_log_scale,
                 grad_shift);
  }
  return o.returned(grad_x);
}

void check_output_grads(const Problem& p, const std::optional<at::Tensor>& grad_y,
                        const std::optional<at::Tensor>& grad_logdet, const at::Tensor& x) {
  if (grad_y) check_matches(*grad_y, "grad_y", x, "x", x.sizes());
  if (grad_logdet) check_sum_grad(*grad_logdet, "grad_logdet", x, "x", {p.rows});
}

}  // namespace

ScaleFn parse_scale_fn(bool has_log_scale, c10::string_view name) {
  if (!has_log_scale) return ScaleFn::kNone;
  if (name == "exp") return ScaleFn::kExp;
  if (name == "tanh") return ScaleFn::kTanh;
  if (name == "atan") return ScaleFn::kAtan;
  if (name == "sigmoid") return ScaleFn::kSigmoid;
  TORCH_CHECK_VALUE(false, "unknown scale_fn '", name, "': expected 'exp', 'tanh', 'atan' or 'sigmoid'");
}

double parse_clamp(ScaleFn f, std::optional<double> clamp) {
  const bool clamped = f == ScaleFn::kTanh || f == ScaleFn::kAtan;
  if (!clamp) return clamped ? 2.0 : 0.0;
  TORCH_CHECK_VALUE(clamped, "clamp applies only to scale_fn 'tanh' and 'atan'");
  // The float32 kernels use clamp and 1 / clamp: both must stay normal floats.
  TORCH_CHECK_VALUE(*clamp >= 1e-30 && *clamp <= 1e30, "clamp must be in [1e-30, 1e30], got ", *clamp);
  return *clamp;
}

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const std::optional<at::Tensor>& log_scale,
                                           const at::Tensor& shift, const at::Tensor& mask, int64_t mask_kind,
                                           c10::string_view scale_fn, std::optional<double> clamp,
                                           bool reverse) {
  return forward_of(operands(x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet, const at::Tensor& x,
    const std::optional<at::Tensor>& log_scale, const at::Tensor& shift, const at::Tensor& mask,
    int64_t mask_kind, c10::string_view scale_fn, std::optional<double> clamp, bool reverse) {
  const Operands o = operands(x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse);
  check_output_grads(o.p, grad_y, grad_logdet, x);
  at::Tensor grad_shift = at::empty_like(o.x);
  at::Tensor grad_log_scale = log_scale ? at::empty_like(o.x) : at::empty({0}, x.options());
  at::Tensor grad_x = backward_into(o, grad_y, grad_logdet, grad_log_scale, grad_shift);
  return {grad_x, log_scale ? o.returned(grad_log_scale) : grad_log_scale, o.returned(grad_shift)};
}

std::tuple<at::Tensor, at::Tensor> forward_stacked(const at::Tensor& x, const at::Tensor& params,
                                                   const at::Tensor& mask, int64_t mask_kind,
                                                   c10::string_view scale_fn, std::optional<double> clamp,
                                                   bool reverse) {
  return forward_of(stacked_operands(x, params, mask, mask_kind, scale_fn, clamp, reverse));
}

std::tuple<at::Tensor, at::Tensor> backward_stacked(const std::optional<at::Tensor>& grad_y,
                                                    const std::optional<at::Tensor>& grad_logdet,
                                                    const at::Tensor& x, const at::Tensor& params,
                                                    const at::Tensor& mask, int64_t mask_kind,
                                                    c10::string_view scale_fn, std::optional<double> clamp,
                                                    bool reverse) {
  Operands o = stacked_operands(x, params, mask, mask_kind, scale_fn, clamp, reverse);
  check_output_grads(o.p, grad_y, grad_logdet, x);
  const int64_t c = x.size(1);
  // One gradient of params in x's layout, its halves written by the kernels as params' are read.
  const auto format = o.nhwc ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor grad_params = at::empty(params.sizes(), x.options().memory_format(format));
  const at::Tensor grad_v = o.view(grad_params);
  at::Tensor grad_log_scale = grad_v.narrow(o.channel_dim(), 0, c), grad_shift = grad_v.narrow(o.channel_dim(), c, c);
  o.p.param_grad_stride = 2 * o.p.row_len;
  at::Tensor grad_x = backward_into(o, grad_y, grad_logdet, grad_log_scale, grad_shift);
  return {grad_x, grad_params};
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

const c10::TypedOperatorHandle<decltype(forward)>& forward_op() {
  static const auto op = op_handle<decltype(forward)>("pygen::affine_coupling");
  return op;
}

const c10::TypedOperatorHandle<decltype(forward_stacked)>& forward_stacked_op() {
  static const auto op = op_handle<decltype(forward_stacked)>("pygen::affine_coupling_stacked");
  return op;
}

// The settings (the ops' arguments after the mask) as the autograd context keeps them.
struct Settings {
  int64_t mask_kind;
  std::string scale_fn;
  std::optional<double> clamp;
  bool reverse;

  void save(AutogradContext* ctx) const {
    ctx->saved_data["mask_kind"] = mask_kind;
    ctx->saved_data["scale_fn"] = scale_fn;
    ctx->saved_data["clamp"] = clamp;
    ctx->saved_data["reverse"] = reverse;
  }

  static Settings saved(AutogradContext* ctx) {
    return {ctx->saved_data["mask_kind"].toInt(), ctx->saved_data["scale_fn"].toStringRef(),
            ctx->saved_data["clamp"].toOptional<double>(), ctx->saved_data["reverse"].toBool()};
  }
};

// Whether a backward has work: an output's gradient, and an input (of the first n) that wants one.
bool backward_needed(AutogradContext* ctx, const variable_list& grads, int n_inputs) {
  bool wanted = false;
  for (int i = 0; i < n_inputs; ++i) wanted = wanted || ctx->needs_input_grad(i);
  return wanted && (grads[0].defined() || grads[1].defined());
}

class AffineCouplingFunction : public torch::autograd::Function<AffineCouplingFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x,
                               const std::optional<at::Tensor>& log_scale, const at::Tensor& shift,
                               const at::Tensor& mask, int64_t mask_kind, c10::string_view scale_fn,
                               std::optional<double> clamp, bool reverse) {
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, logdet] = forward_op().call(x, log_scale, shift, mask, mask_kind, scale_fn, clamp, reverse);
    ctx->save_for_backward({x, log_scale.value_or(at::Tensor()), shift, mask});
    Settings{mask_kind, std::string(scale_fn), clamp, reverse}.save(ctx);
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op =
        op_handle<decltype(pygen::affine_coupling::backward)>("pygen::affine_coupling_backward");
    variable_list out(8);
    if (!backward_needed(ctx, grads, 3)) return out;
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &log_scale = saved[1], &shift = saved[2], &mask = saved[3];
    const Settings s = Settings::saved(ctx);
    const BackwardDispatch dispatch;
    auto [grad_x, grad_log_scale, grad_shift] =
        op.call(optional_of(grads[0]), optional_of(grads[1]), x, optional_of(log_scale), shift, mask,
                s.mask_kind, s.scale_fn, s.clamp, s.reverse);
    out[0] = grad_x;
    if (log_scale.defined()) out[1] = grad_log_scale;
    out[2] = grad_shift;
    return out;
  }
};

class AffineCouplingStackedFunction : public torch::autograd::Function<AffineCouplingStackedFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& params,
                               const at::Tensor& mask, int64_t mask_kind, c10::string_view scale_fn,
                               std::optional<double> clamp, bool reverse) {
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, logdet] = forward_stacked_op().call(x, params, mask, mask_kind, scale_fn, clamp, reverse);
    ctx->save_for_backward({x, params, mask});
    Settings{mask_kind, std::string(scale_fn), clamp, reverse}.save(ctx);
    return {y, logdet};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = op_handle<decltype(backward_stacked)>("pygen::affine_coupling_stacked_backward");
    variable_list out(7);
    if (!backward_needed(ctx, grads, 2)) return out;
    const auto saved = ctx->get_saved_variables();
    const Settings s = Settings::saved(ctx);
    const BackwardDispatch dispatch;
    auto [grad_x, grad_params] = op.call(optional_of(grads[0]), optional_of(grads[1]), saved[0], saved[1], saved[2],
                                         s.mask_kind, s.scale_fn, s.clamp, s.reverse);
    out[0] = grad_x;
    out[1] = grad_params;
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor> forward_autograd(const at::Tensor& x,
                                                    const std::optional<at::Tensor>& log_scale,
                                                    const at::Tensor& shift, const at::Tensor& mask,
                                                    int64_t mask_kind, c10::string_view scale_fn,
                                                    std::optional<double> clamp, bool reverse) {
  const auto out = AffineCouplingFunction::apply(x, log_scale, shift, mask, mask_kind, scale_fn,
                                                 clamp, reverse);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> forward_stacked_autograd(const at::Tensor& x, const at::Tensor& params,
                                                            const at::Tensor& mask, int64_t mask_kind,
                                                            c10::string_view scale_fn,
                                                            std::optional<double> clamp, bool reverse) {
  const auto out =
      AffineCouplingStackedFunction::apply(x, params, mask, mask_kind, scale_fn, clamp, reverse);
  return {out[0], out[1]};
}

// In an autocast region: x, log_scale and shift (params) in their widest dtype (common/autocast.h).
std::tuple<at::Tensor, at::Tensor> forward_autocast(const at::Tensor& x,
                                                    const std::optional<at::Tensor>& log_scale,
                                                    const at::Tensor& shift, const at::Tensor& mask,
                                                    int64_t mask_kind, c10::string_view scale_fn,
                                                    std::optional<double> clamp, bool reverse) {
  const AutocastOff autocast_off;
  const auto dtype = widest_floating({&x, log_scale ? &*log_scale : nullptr, &shift});
  return forward_op().call(promoted(x, dtype), promoted(log_scale, dtype), promoted(shift, dtype), mask,
                           mask_kind, scale_fn, clamp, reverse);
}

std::tuple<at::Tensor, at::Tensor> forward_stacked_autocast(const at::Tensor& x, const at::Tensor& params,
                                                            const at::Tensor& mask, int64_t mask_kind,
                                                            c10::string_view scale_fn,
                                                            std::optional<double> clamp, bool reverse) {
  const AutocastOff autocast_off;
  const auto dtype = widest_floating({&x, &params});
  return forward_stacked_op().call(promoted(x, dtype), promoted(params, dtype), mask, mask_kind, scale_fn,
                                   clamp, reverse);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("affine_coupling(Tensor x, Tensor? log_scale, Tensor shift, Tensor mask, int mask_kind,"
        " str scale_fn, float? clamp, bool reverse) -> (Tensor, Tensor)");
  m.def("affine_coupling_backward(Tensor? grad_y, Tensor? grad_logdet, Tensor x,"
        " Tensor? log_scale, Tensor shift, Tensor mask, int mask_kind, str scale_fn,"
        " float? clamp, bool reverse) -> (Tensor, Tensor, Tensor)");
  m.def("affine_coupling_stacked(Tensor x, Tensor params, Tensor mask, int mask_kind, str scale_fn,"
        " float? clamp, bool reverse) -> (Tensor, Tensor)");
  m.def("affine_coupling_stacked_backward(Tensor? grad_y, Tensor? grad_logdet, Tensor x, Tensor params,"
        " Tensor mask, int mask_kind, str scale_fn, float? clamp, bool reverse) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("affine_coupling", &forward);
  m.impl("affine_coupling_backward", &backward);
  m.impl("affine_coupling_stacked", &forward_stacked);
  m.impl("affine_coupling_stacked_backward", &backward_stacked);
}

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("affine_coupling", &forward);
  m.impl("affine_coupling_backward", &backward);
  m.impl("affine_coupling_stacked", &forward_stacked);
  m.impl("affine_coupling_stacked_backward", &backward_stacked);
}

TORCH_LIBRARY_IMPL(pygen, Autograd, m) {
  m.impl("affine_coupling", &forward_autograd);
  m.impl("affine_coupling_stacked", &forward_stacked_autograd);
}

TORCH_LIBRARY_IMPL(pygen, AutocastCPU, m) {
  m.impl("affine_coupling", &forward_autocast);
  m.impl("affine_coupling_stacked", &forward_stacked_autocast);
}

TORCH_LIBRARY_IMPL(pygen, AutocastCUDA, m) {
  m.impl("affine_coupling", &forward_autocast);
  m.impl("affine_coupling_stacked", &forward_stacked_autocast);
}

}  // namespace pygen::affine_coupling
