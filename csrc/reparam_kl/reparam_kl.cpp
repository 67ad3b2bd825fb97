// Device-independent part of the op: argument checks, contiguous copies, output allocation and
// dispatch to the CPU or CUDA kernels.
#include "reparam_kl/reparam_kl.h"

#include "common/checks.h"

namespace pygen::reparam_kl {
namespace {

std::vector<int64_t> z_shape(const at::Tensor& mu, int64_t n_samples) {
  std::vector<int64_t> shape(mu.sizes().begin(), mu.sizes().end());
  if (n_samples > 1) shape.insert(shape.begin(), n_samples);
  return shape;
}

at::IntArrayRef kl_shape(const at::Tensor& mu) { return mu.sizes().slice(0, mu.dim() - 1); }

// Checks shared by forward and backward; returns the kernel view of the problem.
Problem check_inputs(const at::Tensor& mu, const at::Tensor& logvar,
                     const std::optional<at::Tensor>& noise, const std::optional<at::Tensor>& seed,
                     int64_t n_samples) {
  check_floating(mu, "mu");
  TORCH_CHECK_VALUE(mu.dim() >= 1, "mu must have at least one dimension (the latent dimension)");
  TORCH_CHECK_VALUE(mu.size(-1) > 0, "mu has an empty last (latent) dimension: ", mu.sizes());
  check_matches(logvar, "logvar", mu, "mu", mu.sizes());
  TORCH_CHECK_VALUE(n_samples >= 1, "n_samples must be >= 1, got ", n_samples);
  TORCH_CHECK_VALUE(noise.has_value() != seed.has_value(),
                    "exactly one of noise and seed must be given");
  if (noise) {
    check_matches(*noise, "noise", mu, "mu", z_shape(mu, n_samples));
  } else {
    check_seed(*seed, mu);
  }
  const int64_t dim = mu.size(-1);
  return {mu.numel() / dim, dim, n_samples};
}

at::Tensor contiguous_or_undefined(const std::optional<at::Tensor>& t) {
  return t ? t->contiguous() : at::Tensor();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& mu, const at::Tensor& logvar,
                                           const std::optional<at::Tensor>& noise,
                                           const std::optional<at::Tensor>& seed, int64_t n_samples) {
  const Problem p = check_inputs(mu, logvar, noise, seed, n_samples);
  const at::Tensor mu_c = mu.contiguous(), logvar_c = logvar.contiguous();
  const at::Tensor noise_c = contiguous_or_undefined(noise), seed_c = contiguous_or_undefined(seed);
  at::Tensor z = at::empty(z_shape(mu, n_samples), mu.options());
  at::Tensor kl = at::empty(kl_shape(mu), mu.options());
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

std::tuple<at::Tensor, at::Tensor> backward(const std::optional<at::Tensor>& grad_z,
                                            const std::optional<at::Tensor>& grad_kl,
                                            const at::Tensor& mu, const at::Tensor& logvar,
                                            const std::optional<at::Tensor>& noise,
                                            const std::optional<at::Tensor>& seed, int64_t n_samples) {
  const Problem p = check_inputs(mu, logvar, noise, seed, n_samples);
  if (grad_z) check_matches(*grad_z, "grad_z", mu, "mu", z_shape(mu, n_samples));
  if (grad_kl) check_matches(*grad_kl, "grad_kl", mu, "mu", kl_shape(mu));
  const at::Tensor mu_c = mu.contiguous(), logvar_c = logvar.contiguous();
  const at::Tensor noise_c = contiguous_or_undefined(noise), seed_c = contiguous_or_undefined(seed);
  const at::Tensor grad_z_c = contiguous_or_undefined(grad_z);
  const at::Tensor grad_kl_c = contiguous_or_undefined(grad_kl);
  at::Tensor grad_mu = at::empty_like(mu_c), grad_logvar = at::empty_like(logvar_c);
  if (p.rows == 0) return {grad_mu, grad_logvar};
  if (on_cuda(mu, "reparameterize_kl")) {
#ifdef PYGEN_WITH_CUDA
    backward_cuda(p, grad_z_c, grad_kl_c, mu_c, logvar_c, noise_c, seed_c, grad_mu, grad_logvar);
#endif
  } else {
    backward_cpu(p, grad_z_c, grad_kl_c, mu_c, logvar_c, noise_c, seed_c, grad_mu, grad_logvar);
  }
  return {grad_mu, grad_logvar};
}

}  // namespace pygen::reparam_kl
