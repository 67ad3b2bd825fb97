// Fused reparameterization + Gaussian KL:
//   z[s, r, :] = mu[r, :] + exp(0.5 * logvar[r, :]) * eps[s, r, :]
//   kl[r]      = 0.5 * sum_d (mu^2 + exp(logvar) - 1 - logvar)
// kl is float32 for 16-bit inputs (common/checks.h, sum_dtype), as its gradient grad_kl.
// eps is either given (`noise`) or element g of the Philox stream `seed` (g = flat index in z).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace pygen::reparam_kl {

// Shapes seen by the kernels: mu, logvar (rows, dim); z, noise, grad_z (samples, rows, dim). Rows
// of z, noise and grad_z follow one another; rows of mu and logvar may lie further apart (the
// halves of an encoder's output, read where they lie: common/rows.h), and so may rows of grad_mu
// and grad_logvar (the halves of the stacked op's one gradient, written where they lie).
struct Problem {
  int64_t rows, dim, samples;
  int64_t mu_stride, logvar_stride;  // elements from a row of mu (logvar) to the next
  int64_t grad_stride;               // elements from a row of grad_mu (or grad_logvar) to the next
};

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& mu, const at::Tensor& logvar,
                                           const std::optional<at::Tensor>& noise,
                                           const std::optional<at::Tensor>& seed, int64_t n_samples);

std::tuple<at::Tensor, at::Tensor> backward(const std::optional<at::Tensor>& grad_z,
                                            const std::optional<at::Tensor>& grad_kl,
                                            const at::Tensor& mu, const at::Tensor& logvar,
                                            const std::optional<at::Tensor>& noise,
                                            const std::optional<at::Tensor>& seed, int64_t n_samples);

// The same on stats (..., 2D): mu its first half over the last dimension, logvar its second. The
// backward returns the gradient of stats, contiguous, with grad_mu and grad_logvar written by the
// kernels into its halves (no concatenation).
std::tuple<at::Tensor, at::Tensor> forward_stacked(const at::Tensor& stats,
                                                   const std::optional<at::Tensor>& noise,
                                                   const std::optional<at::Tensor>& seed,
                                                   int64_t n_samples);

at::Tensor backward_stacked(const std::optional<at::Tensor>& grad_z,
                            const std::optional<at::Tensor>& grad_kl, const at::Tensor& stats,
                            const std::optional<at::Tensor>& noise,
                            const std::optional<at::Tensor>& seed, int64_t n_samples);

// Device kernels. Tensors are contiguous but for the row strides of mu, logvar and the gradients
// (Problem); optional ones are undefined when absent; a seed is read only when noise is undefined.
void forward_cpu(const Problem& p, const at::Tensor& mu, const at::Tensor& logvar,
                 const at::Tensor& noise, const at::Tensor& seed, at::Tensor& z, at::Tensor& kl);
void backward_cpu(const Problem& p, const at::Tensor& grad_z, const at::Tensor& grad_kl,
                  const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& noise,
                  const at::Tensor& seed, at::Tensor& grad_mu, at::Tensor& grad_logvar);
#ifdef PYGEN_WITH_CUDA
void forward_cuda(const Problem& p, const at::Tensor& mu, const at::Tensor& logvar,
                  const at::Tensor& noise, const at::Tensor& seed, at::Tensor& z, at::Tensor& kl);
void backward_cuda(const Problem& p, const at::Tensor& grad_z, const at::Tensor& grad_kl,
                   const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& noise,
                   const at::Tensor& seed, at::Tensor& grad_mu, at::Tensor& grad_logvar);
#endif

}  // namespace pygen::reparam_kl
