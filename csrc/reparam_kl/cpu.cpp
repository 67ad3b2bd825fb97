// CPU kernels: rows split across threads, each row processed in chunks that stay in L1, with the
// noise generated chunk by chunk (common/cpu_philox.h). Inner loops are `omp simd` so that the
// polynomial exp vectorizes.
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/Dispatch.h>

#include <algorithm>
#include <array>
#include <type_traits>

#include "common/cpu_convert.h"
#include "common/cpu_philox.h"
#include "common/math.h"
#include "reparam_kl/reparam_kl.h"

namespace pygen::reparam_kl {
namespace {

constexpr int64_t kChunk = kNormalsPerCall;  // columns per chunk

// eps[i] for the chunk of z starting at flat index `first`: given noise or the Philox stream.
template <typename scalar_t, typename acc_t>
void load_eps(const scalar_t* noise, uint64_t seed, int64_t first, int64_t n, acc_t* eps) {
  if (noise == nullptr) {
    if constexpr (std::is_same_v<acc_t, float>) {
      fill_normals(seed, first, n, eps);
    } else {
      alignas(64) std::array<float, kChunk> buf;
      fill_normals(seed, first, n, buf.data());
      std::copy_n(buf.data(), n, eps);
    }
    return;
  }
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) eps[i] = widen<acc_t>(noise[first + i]);
}

uint64_t seed_value(const at::Tensor& noise, const at::Tensor& seed) {
  return noise.defined() ? 0 : static_cast<uint64_t>(seed.item<int64_t>());
}

// ~4k elements per task: drawing the noise costs ~2 ns an element, so even small batches are
// worth splitting across threads.
int64_t grain_rows(const Problem& p) { return std::max<int64_t>(1, 4096 / (p.dim * p.samples)); }

// The row loops live in plain functions, outside the parallel_for lambda, where GCC vectorizes
// them (inside the OpenMP-outlined lambda it does not).
template <typename scalar_t>
PYGEN_CPU_CLONES void forward_rows(const Problem& p, const scalar_t* mu, const scalar_t* logvar, const scalar_t* noise,
                  uint64_t seed, scalar_t* z, at::opmath_type<scalar_t>* kl, int64_t row_begin, int64_t row_end) {
  using acc_t = at::opmath_type<scalar_t>;
  alignas(64) std::array<acc_t, kChunk> mean, stddev, eps;
  for (int64_t r = row_begin; r < row_end; ++r) {
    acc_t kl_sum = 0;
    for (int64_t d0 = 0; d0 < p.dim; d0 += kChunk) {
      const int64_t n = std::min(kChunk, p.dim - d0);
      const int64_t offset = r * p.dim + d0;
      const scalar_t* mu_d = mu + r * p.mu_stride + d0;
      const scalar_t* logvar_d = logvar + r * p.logvar_stride + d0;
#pragma omp simd reduction(+ : kl_sum)
      for (int64_t i = 0; i < n; ++i) {
        const acc_t m = widen<acc_t>(mu_d[i]);
        const acc_t lv = widen<acc_t>(logvar_d[i]);
        const acc_t sd = fast_exp(acc_t(0.5) * lv);
        mean[i] = m;
        stddev[i] = sd;
        kl_sum += m * m + sd * sd - acc_t(1) - lv;
      }
      for (int64_t s = 0; s < p.samples; ++s) {
        const int64_t first = s * p.rows * p.dim + offset;
        load_eps(noise, seed, first, n, eps.data());
        scalar_t* zs = z + first;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) zs[i] = narrow<scalar_t>(mean[i] + stddev[i] * eps[i]);
      }
    }
    kl[r] = acc_t(0.5) * kl_sum;
  }
}

// grad_mu     = grad_kl * mu + sum_s grad_z
// grad_logvar = 0.5 * grad_kl * (exp(logvar) - 1) + 0.5 * std * sum_s grad_z * eps
template <typename scalar_t>
PYGEN_CPU_CLONES void backward_rows(const Problem& p, const scalar_t* grad_z, const at::opmath_type<scalar_t>* grad_kl,
                 const scalar_t* mu, const scalar_t* logvar, const scalar_t* noise, uint64_t seed,
                 scalar_t* grad_mu, scalar_t* grad_logvar, int64_t row_begin, int64_t row_end) {
  using acc_t = at::opmath_type<scalar_t>;
  alignas(64) std::array<acc_t, kChunk> sum_g, sum_g_eps, eps;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const acc_t gkl = grad_kl ? grad_kl[r] : acc_t(0);
    for (int64_t d0 = 0; d0 < p.dim; d0 += kChunk) {
      const int64_t n = std::min(kChunk, p.dim - d0);
      const int64_t offset = r * p.dim + d0;
      std::fill_n(sum_g.data(), n, acc_t(0));
      std::fill_n(sum_g_eps.data(), n, acc_t(0));
      for (int64_t s = 0; grad_z && s < p.samples; ++s) {
        const int64_t first = s * p.rows * p.dim + offset;
        load_eps(noise, seed, first, n, eps.data());
        const scalar_t* gz = grad_z + first;
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) {
          const acc_t g = widen<acc_t>(gz[i]);
          sum_g[i] += g;
          sum_g_eps[i] += g * eps[i];
        }
      }
      const scalar_t* mu_d = mu + r * p.mu_stride + d0;
      const scalar_t* logvar_d = logvar + r * p.logvar_stride + d0;
      scalar_t* grad_mu_d = grad_mu + r * p.grad_stride + d0;
      scalar_t* grad_logvar_d = grad_logvar + r * p.grad_stride + d0;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) {
        const acc_t m = widen<acc_t>(mu_d[i]);
        const acc_t sd = fast_exp(acc_t(0.5) * widen<acc_t>(logvar_d[i]));
        grad_mu_d[i] = narrow<scalar_t>(gkl * m + sum_g[i]);
        grad_logvar_d[i] =
            narrow<scalar_t>(acc_t(0.5) * (grad_times(gkl, sd * sd - acc_t(1)) + grad_times(sum_g_eps[i], sd)));
      }
    }
  }
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

}  // namespace

void forward_cpu(const Problem& p, const at::Tensor& mu, const at::Tensor& logvar,
                 const at::Tensor& noise, const at::Tensor& seed, at::Tensor& z, at::Tensor& kl) {
  const uint64_t seed_v = seed_value(noise, seed);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparam_kl_forward_cpu", [&] {
    const scalar_t* mu_p = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_p = logvar.const_data_ptr<scalar_t>();
    const scalar_t* noise_p = ptr_or_null<scalar_t>(noise);
    scalar_t* z_p = z.mutable_data_ptr<scalar_t>();
    auto* kl_p = kl.mutable_data_ptr<at::opmath_type<scalar_t>>();
    at::parallel_for(0, p.rows, grain_rows(p), [&](int64_t begin, int64_t end) {
      forward_rows<scalar_t>(p, mu_p, logvar_p, noise_p, seed_v, z_p, kl_p, begin, end);
    });
  });
}

void backward_cpu(const Problem& p, const at::Tensor& grad_z, const at::Tensor& grad_kl,
                  const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& noise,
                  const at::Tensor& seed, at::Tensor& grad_mu, at::Tensor& grad_logvar) {
  const uint64_t seed_v = seed_value(noise, seed);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparam_kl_backward_cpu", [&] {
    const scalar_t* grad_z_p = ptr_or_null<scalar_t>(grad_z);
    const auto* grad_kl_p = ptr_or_null<at::opmath_type<scalar_t>>(grad_kl);
    const scalar_t* mu_p = mu.const_data_ptr<scalar_t>();
    const scalar_t* logvar_p = logvar.const_data_ptr<scalar_t>();
    const scalar_t* noise_p = ptr_or_null<scalar_t>(noise);
    scalar_t* grad_mu_p = grad_mu.mutable_data_ptr<scalar_t>();
    scalar_t* grad_logvar_p = grad_logvar.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, p.rows, grain_rows(p), [&](int64_t begin, int64_t end) {
      backward_rows<scalar_t>(p, grad_z_p, grad_kl_p, mu_p, logvar_p, noise_p, seed_v, grad_mu_p,
                              grad_logvar_p, begin, end);
    });
  });
}

}  // namespace pygen::reparam_kl
