// CUDA kernels: one warp per row, each lane owning groups of W consecutive elements (8 for float
// and 16-bit types: one or two 16-byte loads per tensor, so a lane keeps more bytes in flight
// through the Philox arithmetic), which is W / 4 Philox blocks of noise when the row length is a
// multiple of W. The KL sum is reduced with warp shuffles; nothing is stored for backward, which
// regenerates the noise.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "common/philox.h"
#include "common/vector_io.cuh"
#include "reparam_kl/reparam_kl.h"

namespace pygen::reparam_kl {
namespace {

constexpr int kWarpsPerBlock = 8;
// eps for the group of W elements of z starting at flat index g: given noise, or the Philox stream
// (an aligned group starts a Philox block: g % 4 == 0).
template <int W, bool kAligned, typename scalar_t, typename acc_t>
__device__ __forceinline__ void group_eps(const scalar_t* noise, uint64_t seed, int64_t g, int n,
                                          acc_t* eps) {
  if (noise != nullptr) {
    load_group<W>(noise, g, n, kAligned, eps);
  } else if (kAligned) {
#pragma unroll
    for (int b = 0; b < W / 4; ++b) {
      float e[4];
      normal4((static_cast<uint64_t>(g) >> 2) + b, seed, e);
#pragma unroll
      for (int k = 0; k < 4; ++k) eps[4 * b + k] = e[k];
    }
  } else {
#pragma unroll
    for (int k = 0; k < W; ++k) eps[k] = k < n ? normal_at(static_cast<uint64_t>(g + k), seed) : 0.0f;
  }
}

// Math in at::opmath_type: double for double inputs (gradcheck), float for every other dtype;
// kl and grad_kl are in that type too (sum_dtype).
template <typename scalar_t, bool kAligned>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
forward_kernel(Problem p, const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
               const scalar_t* __restrict__ noise, const int64_t* __restrict__ seed_ptr,
               scalar_t* __restrict__ z, at::opmath_type<scalar_t>* __restrict__ kl) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int W = wide_group<scalar_t>();
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= p.rows) return;
  const uint64_t seed = noise ? 0 : static_cast<uint64_t>(*seed_ptr);
  const int64_t base = row * p.dim, first = static_cast<int64_t>(lane) * W;
  const int64_t m_base = row * p.mu_stride, lv_base = row * p.logvar_stride;
  // 16-bit rows on the vector path: the next group's mu and logvar (16 raw bytes each) are loaded
  // before this group's arithmetic, so that a lane keeps loads in flight through its Philox blocks
  // (H200, 2026-11-26: bf16 took the same time per element as float32, 37 % of copy against 62 %).
  constexpr bool kAhead = kAligned && sizeof(scalar_t) == 2;
  using Raw = Vec<scalar_t, W>;
  Raw m_raw{}, lv_raw{};
  if (kAhead && first < p.dim) {
    m_raw = *reinterpret_cast<const Raw*>(mu + m_base + first);
    lv_raw = *reinterpret_cast<const Raw*>(logvar + lv_base + first);
  }
  acc_t kl_sum = 0;
  for (int64_t d = first; d < p.dim; d += 32 * W) {
    const int n = static_cast<int>(min(static_cast<int64_t>(W), p.dim - d));
    acc_t m[W], lv[W], sd[W], eps[W], out[W];
    if constexpr (kAhead) {
#pragma unroll
      for (int k = 0; k < W; ++k) {
        m[k] = static_cast<acc_t>(m_raw.v[k]);
        lv[k] = static_cast<acc_t>(lv_raw.v[k]);
      }
      if (d + 32 * W < p.dim) {
        m_raw = *reinterpret_cast<const Raw*>(mu + m_base + d + 32 * W);
        lv_raw = *reinterpret_cast<const Raw*>(logvar + lv_base + d + 32 * W);
      }
    } else {
      load_group<W>(mu, m_base + d, n, kAligned, m);
      load_group<W>(logvar, lv_base + d, n, kAligned, lv);
    }
#pragma unroll
    for (int k = 0; k < W; ++k) {
      sd[k] = fast_exp(acc_t(0.5) * lv[k]);
      if (k < n) kl_sum += m[k] * m[k] + sd[k] * sd[k] - acc_t(1) - lv[k];
    }
    for (int64_t s = 0; s < p.samples; ++s) {
      const int64_t g = s * p.rows * p.dim + base + d;
      group_eps<W, kAligned>(noise, seed, g, n, eps);
#pragma unroll
      for (int k = 0; k < W; ++k) out[k] = m[k] + sd[k] * eps[k];
      store_group<W>(z, g, n, kAligned, out);
    }
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) kl_sum += __shfl_xor_sync(0xffffffffu, kl_sum, offset);
  if (lane == 0) kl[row] = acc_t(0.5) * kl_sum;
}

template <typename scalar_t, bool kAligned>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
backward_kernel(Problem p, const scalar_t* __restrict__ grad_z,
                const at::opmath_type<scalar_t>* __restrict__ grad_kl,
                const scalar_t* __restrict__ mu, const scalar_t* __restrict__ logvar,
                const scalar_t* __restrict__ noise, const int64_t* __restrict__ seed_ptr,
                scalar_t* __restrict__ grad_mu, scalar_t* __restrict__ grad_logvar) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int W = wide_group<scalar_t>();
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= p.rows) return;
  const uint64_t seed = (noise || !grad_z) ? 0 : static_cast<uint64_t>(*seed_ptr);
  const acc_t gkl = grad_kl ? grad_kl[row] : acc_t(0);
  const int64_t base = row * p.dim, m_base = row * p.mu_stride, lv_base = row * p.logvar_stride;
  const int64_t grad_base = row * p.grad_stride;
  for (int64_t d = static_cast<int64_t>(lane) * W; d < p.dim; d += 32 * W) {
    const int n = static_cast<int>(min(static_cast<int64_t>(W), p.dim - d));
    acc_t m[W], lv[W], eps[W], g[W], out_mu[W], out_lv[W];
    acc_t sum_g[W] = {}, sum_g_eps[W] = {};
    load_group<W>(mu, m_base + d, n, kAligned, m);
    load_group<W>(logvar, lv_base + d, n, kAligned, lv);
    for (int64_t s = 0; grad_z && s < p.samples; ++s) {
      const int64_t gi = s * p.rows * p.dim + base + d;
      group_eps<W, kAligned>(noise, seed, gi, n, eps);
      load_group<W>(grad_z, gi, n, kAligned, g);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        sum_g[k] += g[k];
        sum_g_eps[k] += g[k] * eps[k];
      }
    }
#pragma unroll
    for (int k = 0; k < W; ++k) {
      const acc_t sd = fast_exp(acc_t(0.5) * lv[k]);
      out_mu[k] = gkl * m[k] + sum_g[k];
      out_lv[k] = acc_t(0.5) * (grad_times(gkl, sd * sd - acc_t(1)) + grad_times(sum_g_eps[k], sd));
    }
    store_group<W>(grad_mu, grad_base + d, n, kAligned, out_mu);
    store_group<W>(grad_logvar, grad_base + d, n, kAligned, out_lv);
  }
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

// The seed on the device, so that a seed drawn on the GPU is read without a host sync.
at::Tensor device_seed(const at::Tensor& noise, const at::Tensor& seed, const at::Tensor& like) {
  return noise.defined() ? at::Tensor() : seed.to(like.device(), /*non_blocking=*/true);
}

}  // namespace

// The vector path needs rows (and rows of mu, logvar and the gradients) a multiple of W elements
// apart and every pointer aligned to a group.
template <typename scalar_t>
bool groups_aligned(const Problem& p, std::initializer_list<const at::Tensor*> tensors) {
  constexpr int W = wide_group<scalar_t>();
  if (p.dim % W != 0 || p.mu_stride % W != 0 || p.logvar_stride % W != 0 || p.grad_stride % W != 0)
    return false;
  for (const at::Tensor* t : tensors)
    if (t->defined() && reinterpret_cast<uintptr_t>(t->const_data_ptr()) % sizeof(Vec<scalar_t, W>) != 0)
      return false;
  return true;
}

void forward_cuda(const Problem& p, const at::Tensor& mu, const at::Tensor& logvar,
                  const at::Tensor& noise, const at::Tensor& seed, at::Tensor& z, at::Tensor& kl) {
  const c10::cuda::CUDAGuard guard(mu.device());
  const at::Tensor seed_d = device_seed(noise, seed, mu);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>((p.rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparam_kl_forward_cuda", [&] {
    const bool aligned = groups_aligned<scalar_t>(p, {&mu, &logvar, &noise, &z});
    auto kernel = aligned ? forward_kernel<scalar_t, true> : forward_kernel<scalar_t, false>;
    kernel<<<grid, kWarpsPerBlock * 32, 0, stream>>>(
        p, mu.const_data_ptr<scalar_t>(), logvar.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(noise),
        seed_d.defined() ? seed_d.const_data_ptr<int64_t>() : nullptr, z.mutable_data_ptr<scalar_t>(),
        kl.mutable_data_ptr<at::opmath_type<scalar_t>>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void backward_cuda(const Problem& p, const at::Tensor& grad_z, const at::Tensor& grad_kl,
                   const at::Tensor& mu, const at::Tensor& logvar, const at::Tensor& noise,
                   const at::Tensor& seed, at::Tensor& grad_mu, at::Tensor& grad_logvar) {
  const c10::cuda::CUDAGuard guard(mu.device());
  const at::Tensor seed_d = device_seed(noise, seed, mu);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const dim3 grid(static_cast<unsigned>((p.rows + kWarpsPerBlock - 1) / kWarpsPerBlock));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, mu.scalar_type(), "reparam_kl_backward_cuda", [&] {
    const bool aligned = groups_aligned<scalar_t>(p, {&grad_z, &mu, &logvar, &noise, &grad_mu, &grad_logvar});
    auto kernel = aligned ? backward_kernel<scalar_t, true> : backward_kernel<scalar_t, false>;
    kernel<<<grid, kWarpsPerBlock * 32, 0, stream>>>(
        p, ptr_or_null<scalar_t>(grad_z), ptr_or_null<at::opmath_type<scalar_t>>(grad_kl), mu.const_data_ptr<scalar_t>(),
        logvar.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(noise),
        seed_d.defined() ? seed_d.const_data_ptr<int64_t>() : nullptr, grad_mu.mutable_data_ptr<scalar_t>(),
        grad_logvar.mutable_data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

}  // namespace pygen::reparam_kl
