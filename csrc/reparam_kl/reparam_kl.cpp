// The ops pygen::reparameterize_kl and pygen::reparameterize_kl_stacked (mu and logvar the halves of
// one tensor): argument checks, contiguous copies (none of mu and logvar rows that are contiguous
// already), output allocation, dispatch to the CPU or CUDA kernels, and their registration with
// autograd. Registering in C++ keeps the per-call overhead at the dispatcher's
// few microseconds (a Python custom_op with a Python autograd formula costs ~10x more, which
// dominates small batches).
#include "reparam_kl/reparam_kl.h"

#include <torch/autograd.h>
#include <torch/library.h>

#include "common/autocast.h"
#include "common/backward_dispatch.h"
#include "common/checks.h"
#include "common/rows.h"

namespace pygen::reparam_kl {
namespace {

std::vector<int64_t> z_shape(const at::Tensor& mu, int64_t n_samples) {
  std::vector<int64_t> shape(mu.sizes().begin(), mu.sizes().end());
  if (n_samples > 1) shape.insert(shape.begin(), n_samples);
  return shape;
}

at::IntArrayRef kl_shape(const at::Tensor& mu) { return mu.sizes().slice(0, mu.dim() - 1); }

// Checks shared by forward and backward; returns the kernel view of the problem (gradient rows
// contiguous). `mu_name` names mu where the other arguments are checked against it: "stats" when
// mu is the stacked op's first half.
Problem check_inputs(const at::Tensor& mu, const at::Tensor& logvar,
                     const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& seed,
                     int64_t n_samples, const char* mu_name) {
  check_floating(mu, "mu");
  TORCH_CHECK_VALUE(mu.dim() >= 1, "mu must have at least one dimension (the latent dimension)");
  TORCH_CHECK_VALUE(mu.size(-1) > 0, "mu has an empty last (latent) dimension: ", mu.sizes());
  check_matches(logvar, "logvar", mu, mu_name, mu.sizes());
  TORCH_CHECK_VALUE(n_samples >= 1, "n_samples must be >= 1, got ", n_samples);
  TORCH_CHECK_VALUE(noise.has_value() != seed.has_value(),
                    "exactly one of noise and seed must be given");
  if (noise) {
    check_matches(*noise, "noise", mu, mu_name, z_shape(mu, n_samples));
  } else {
    check_seed(*seed, mu);
  }
  const int64_t dim = mu.size(-1);
  return {mu.numel() / dim, dim, n_samples, dim, dim, dim};
}

// The stacked ops' stats: (..., 2D), mu then logvar over the last dimension.
void check_stats(const at::Tensor& stats) {
  check_floating(stats, "stats");
  TORCH_CHECK_VALUE(stats.dim() >= 1 && stats.size(-1) > 0 && stats.size(-1) % 2 == 0,
                    "stats must have an even, non-empty last dimension (mu, then logvar), got shape ",
                    stats.sizes());
}

// The two halves of t's last dimension, as views (rows 2D apart: read or written in place).
std::pair<at::Tensor, at::Tensor> halves(const at::Tensor& t) {
  const int64_t dim = t.size(-1) / 2;
  return {t.narrow(-1, 0, dim), t.narrow(-1, dim, dim)};
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t ? t->contiguous() : at::Tensor();
}

std::tuple<at::Tensor, at::Tensor> run_forward(Problem p, const at::Tensor& mu,
                                               const at::Tensor& logvar,
                                               const std::optional<at::Tensor>& noise,
                                               const std::optional<at::Tensor>& seed) {
  const at::Tensor mu_c = rows_in_place(mu, mu.dim() - 1, &p.mu_stride);
  const at::Tensor logvar_c = rows_in_place(logvar, logvar.dim() - 1, &p.logvar_stride);
  const at::Tensor noise_c = contiguous_or_undefined(noise), seed_c = contiguous_or_undefined(seed);
  at::Tensor z = at::empty(z_shape(mu, p.samples), mu.options());
  at::Tensor kl = at::empty(kl_shape(mu), mu.options().dtype(sum_dtype(mu)));
  if (p.rows == 0) return {z, kl};
  if (on_cuda(mu, "reparameterize_kl")) {
#ifdef PYGEN_WITH_CUDA
    forward_cuda(p, mu_c, logvar_c, noise_c, seed_c, z, kl);
#endif
  } else {
    forward_cpu(p, mu_c, logvar_c, noise_c, seed_c, z, kl);
  }
  return {z, kl};
}

// Writes the gradients of mu and logvar into grad_mu and grad_logvar (rows p.grad_stride apart).
void run_backward(Problem p, const std::optional<at::Tensor>& grad_z,
                  const std::optional<at::Tensor>& grad_kl, const at::Tensor& mu,
                  const at::Tensor& logvar, const std::optional<at::Tensor>& noise,
                  const std::optional<at::Tensor>& seed, const char* mu_name, at::Tensor& grad_mu,
                  at::Tensor& grad_logvar) {
  if (grad_z) check_matches(*grad_z, "grad_z", mu, mu_name, z_shape(mu, p.samples));
  if (grad_kl) check_sum_grad(*grad_kl, "grad_kl", mu, mu_name, kl_shape(mu));
  if (p.rows == 0) return;
  const at::Tensor mu_c = rows_in_place(mu, mu.dim() - 1, &p.mu_stride);
  const at::Tensor logvar_c = rows_in_place(logvar, logvar.dim() - 1, &p.logvar_stride);
  const at::Tensor noise_c = contiguous_or_undefined(noise), seed_c = contiguous_or_undefined(seed);
  const at::Tensor grad_z_c = contiguous_or_undefined(grad_z);
  const at::Tensor grad_kl_c = contiguous_or_undefined(grad_kl);
  if (on_cuda(mu, "reparameterize_kl")) {
#ifdef PYGEN_WITH_CUDA
    backward_cuda(p, grad_z_c, grad_kl_c, mu_c, logvar_c, noise_c, seed_c, grad_mu, grad_logvar);
#endif
  } else {
    backward_cpu(p, grad_z_c, grad_kl_c, mu_c, logvar_c, noise_c, seed_c, grad_mu, grad_logvar);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& mu, const at::Tensor& logvar,
                                           const std::optional<at::Tensor>& noise,
                                           const std::optional<at::Tensor>& seed, int64_t n_samples) {
  return run_forward(check_inputs(mu, logvar, noise, seed, n_samples, "mu"), mu, logvar, noise, seed);
}

std::tuple<at::Tensor, at::Tensor> backward(const std::optional<at::Tensor>& grad_z,
                                            const std::optional<at::Tensor>& grad_kl,
                                            const at::Tensor& mu, const at::Tensor& logvar,
                                            const std::optional<at::Tensor>& noise,
                                            const std::optional<at::Tensor>& seed, int64_t n_samples) {
  const Problem p = check_inputs(mu, logvar, noise, seed, n_samples, "mu");
  at::Tensor grad_mu = at::empty(mu.sizes(), mu.options()), grad_logvar = at::empty(mu.sizes(), mu.options());
  run_backward(p, grad_z, grad_kl, mu, logvar, noise, seed, "mu", grad_mu, grad_logvar);
  return {grad_mu, grad_logvar};
}

std::tuple<at::Tensor, at::Tensor> forward_stacked(const at::Tensor& stats,
                                                   const std::optional<at::Tensor>& noise,
                                                   const std::optional<at::Tensor>& seed,
                                                   int64_t n_samples) {
  check_stats(stats);
  const auto [mu, logvar] = halves(stats);
  return run_forward(check_inputs(mu, logvar, noise, seed, n_samples, "stats"), mu, logvar, noise,
                     seed);
}

at::Tensor backward_stacked(const std::optional<at::Tensor>& grad_z,
                            const std::optional<at::Tensor>& grad_kl, const at::Tensor& stats,
                            const std::optional<at::Tensor>& noise,
                            const std::optional<at::Tensor>& seed, int64_t n_samples) {
  check_stats(stats);
  const auto [mu, logvar] = halves(stats);
  Problem p = check_inputs(mu, logvar, noise, seed, n_samples, "stats");
  // One contiguous gradient: the kernels write grad_mu and grad_logvar into its halves.
  at::Tensor grad_stats = at::empty(stats.sizes(), stats.options());
  auto [grad_mu, grad_logvar] = halves(grad_stats);
  p.grad_stride = 2 * p.dim;
  run_backward(p, grad_z, grad_kl, mu, logvar, noise, seed, "stats", grad_mu, grad_logvar);
  return grad_stats;
}

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// Calls through the dispatcher, below the autograd key: CPU or CUDA kernels, or fake tensors.
std::tuple<at::Tensor, at::Tensor> call_forward(const at::Tensor& mu, const at::Tensor& logvar,
                                                const std::optional<at::Tensor>& noise,
                                                const std::optional<at::Tensor>& seed,
                                                int64_t n_samples) {
  static const auto op = op_handle<decltype(forward)>("pygen::reparameterize_kl");
  return op.call(mu, logvar, noise, seed, n_samples);
}

std::tuple<at::Tensor, at::Tensor> call_backward(const std::optional<at::Tensor>& grad_z,
                                                 const std::optional<at::Tensor>& grad_kl,
                                                 const at::Tensor& mu, const at::Tensor& logvar,
                                                 const std::optional<at::Tensor>& noise,
                                                 const std::optional<at::Tensor>& seed,
                                                 int64_t n_samples) {
  static const auto op = op_handle<decltype(backward)>("pygen::reparameterize_kl_backward");
  return op.call(grad_z, grad_kl, mu, logvar, noise, seed, n_samples);
}

std::tuple<at::Tensor, at::Tensor> call_forward_stacked(const at::Tensor& stats,
                                                        const std::optional<at::Tensor>& noise,
                                                        const std::optional<at::Tensor>& seed,
                                                        int64_t n_samples) {
  static const auto op = op_handle<decltype(forward_stacked)>("pygen::reparameterize_kl_stacked");
  return op.call(stats, noise, seed, n_samples);
}

at::Tensor call_backward_stacked(const std::optional<at::Tensor>& grad_z,
                                 const std::optional<at::Tensor>& grad_kl, const at::Tensor& stats,
                                 const std::optional<at::Tensor>& noise,
                                 const std::optional<at::Tensor>& seed, int64_t n_samples) {
  static const auto op = op_handle<decltype(backward_stacked)>("pygen::reparameterize_kl_stacked_backward");
  return op.call(grad_z, grad_kl, stats, noise, seed, n_samples);
}

// The gradient of the given noise: dz/deps = exp(logvar / 2).
at::Tensor noise_grad(const at::Tensor& grad_z, const at::Tensor& logvar) {
  return grad_z * at::exp(0.5 * logvar);
}

// Saves the inputs (never eps): backward regenerates the noise from the seed.
class ReparamKLFunction : public torch::autograd::Function<ReparamKLFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& mu, const at::Tensor& logvar,
                               const std::optional<at::Tensor>& noise,
                               const std::optional<at::Tensor>& seed, int64_t n_samples) {
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined: no work
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [z, kl] = call_forward(mu, logvar, noise, seed, n_samples);
    ctx->save_for_backward({mu, logvar, noise.value_or(at::Tensor()), seed.value_or(at::Tensor())});
    ctx->saved_data["n_samples"] = n_samples;
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &mu = saved[0], &logvar = saved[1], &noise = saved[2], &seed = saved[3];
    const at::Tensor &grad_z = grads[0], &grad_kl = grads[1];
    at::Tensor grad_mu, grad_logvar, grad_noise;
    if ((grad_z.defined() || grad_kl.defined()) &&
        (ctx->needs_input_grad(0) || ctx->needs_input_grad(1))) {
      const BackwardDispatch dispatch;
      std::tie(grad_mu, grad_logvar) =
          call_backward(optional_of(grad_z), optional_of(grad_kl), mu, logvar, optional_of(noise),
                        optional_of(seed), ctx->saved_data["n_samples"].toInt());
    }
    if (ctx->needs_input_grad(2) && grad_z.defined()) grad_noise = noise_grad(grad_z, logvar);
    return {grad_mu, grad_logvar, grad_noise, at::Tensor(), at::Tensor()};
  }
};

// The same on stats: its gradient comes as one tensor from the kernels, no concatenation.
class ReparamKLStackedFunction : public torch::autograd::Function<ReparamKLStackedFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& stats,
                               const std::optional<at::Tensor>& noise,
                               const std::optional<at::Tensor>& seed, int64_t n_samples) {
    ctx->set_materialize_grads(false);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [z, kl] = call_forward_stacked(stats, noise, seed, n_samples);
    ctx->save_for_backward({stats, noise.value_or(at::Tensor()), seed.value_or(at::Tensor())});
    ctx->saved_data["n_samples"] = n_samples;
    return {z, kl};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &stats = saved[0], &noise = saved[1], &seed = saved[2];
    const at::Tensor &grad_z = grads[0], &grad_kl = grads[1];
    at::Tensor grad_stats, grad_noise;
    if ((grad_z.defined() || grad_kl.defined()) && ctx->needs_input_grad(0)) {
      const BackwardDispatch dispatch;
      grad_stats = call_backward_stacked(optional_of(grad_z), optional_of(grad_kl), stats,
                                         optional_of(noise), optional_of(seed),
                                         ctx->saved_data["n_samples"].toInt());
    }
    if (ctx->needs_input_grad(1) && grad_z.defined()) {
      grad_noise = noise_grad(grad_z, halves(stats).second);
    }
    return {grad_stats, grad_noise, at::Tensor(), at::Tensor()};
  }
};

std::tuple<at::Tensor, at::Tensor> forward_autograd(const at::Tensor& mu, const at::Tensor& logvar,
                                                    const std::optional<at::Tensor>& noise,
                                                    const std::optional<at::Tensor>& seed,
                                                    int64_t n_samples) {
  const auto out = ReparamKLFunction::apply(mu, logvar, noise, seed, n_samples);
  return {out[0], out[1]};
}

std::tuple<at::Tensor, at::Tensor> forward_stacked_autograd(const at::Tensor& stats,
                                                            const std::optional<at::Tensor>& noise,
                                                            const std::optional<at::Tensor>& seed,
                                                            int64_t n_samples) {
  const auto out = ReparamKLStackedFunction::apply(stats, noise, seed, n_samples);
  return {out[0], out[1]};
}

// In an autocast region: mu, logvar and noise in their widest dtype (common/autocast.h).
std::tuple<at::Tensor, at::Tensor> forward_autocast(const at::Tensor& mu, const at::Tensor& logvar,
                                                    const std::optional<at::Tensor>& noise,
                                                    const std::optional<at::Tensor>& seed,
                                                    int64_t n_samples) {
  const AutocastOff autocast_off;
  const auto dtype = widest_floating({&mu, &logvar, noise ? &*noise : nullptr});
  return call_forward(promoted(mu, dtype), promoted(logvar, dtype), promoted(noise, dtype), seed,
                      n_samples);
}

std::tuple<at::Tensor, at::Tensor> forward_stacked_autocast(const at::Tensor& stats,
                                                            const std::optional<at::Tensor>& noise,
                                                            const std::optional<at::Tensor>& seed,
                                                            int64_t n_samples) {
  const AutocastOff autocast_off;
  const auto dtype = widest_floating({&stats, noise ? &*noise : nullptr});
  return call_forward_stacked(promoted(stats, dtype), promoted(noise, dtype), seed, n_samples);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pygen, m) {
  m.def("reparameterize_kl(Tensor mu, Tensor logvar, Tensor? noise, Tensor? seed, int n_samples)"
        " -> (Tensor, Tensor)");
  m.def("reparameterize_kl_backward(Tensor? grad_z, Tensor? grad_kl, Tensor mu, Tensor logvar,"
        " Tensor? noise, Tensor? seed, int n_samples) -> (Tensor, Tensor)");
  m.def("reparameterize_kl_stacked(Tensor stats, Tensor? noise, Tensor? seed, int n_samples)"
        " -> (Tensor, Tensor)");
  m.def("reparameterize_kl_stacked_backward(Tensor? grad_z, Tensor? grad_kl, Tensor stats,"
        " Tensor? noise, Tensor? seed, int n_samples) -> Tensor");
}

TORCH_LIBRARY_IMPL(pygen, CPU, m) {
  m.impl("reparameterize_kl", &forward);
  m.impl("reparameterize_kl_backward", &backward);
  m.impl("reparameterize_kl_stacked", &forward_stacked);
  m.impl("reparameterize_kl_stacked_backward", &backward_stacked);
}

TORCH_LIBRARY_IMPL(pygen, CUDA, m) {
  m.impl("reparameterize_kl", &forward);
  m.impl("reparameterize_kl_backward", &backward);
  m.impl("reparameterize_kl_stacked", &forward_stacked);
  m.impl("reparameterize_kl_stacked_backward", &backward_stacked);
}

TORCH_LIBRARY_IMPL(pygen, Autograd, m) {
  m.impl("reparameterize_kl", &forward_autograd);
  m.impl("reparameterize_kl_stacked", &forward_stacked_autograd);
}

TORCH_LIBRARY_IMPL(pygen, AutocastCPU, m) {
  m.impl("reparameterize_kl", &forward_autocast);
  m.impl("reparameterize_kl_stacked", &forward_stacked_autocast);
}

TORCH_LIBRARY_IMPL(pygen, AutocastCUDA, m) {
  m.impl("reparameterize_kl", &forward_autocast);
  m.impl("reparameterize_kl_stacked", &forward_stacked_autocast);
}

}  // namespace pygen::reparam_kl
