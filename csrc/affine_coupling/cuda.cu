// CUDA kernels: each sample is cut into segments of up to kMaxSegment elements and one warp handles
// one segment, each lane owning groups of kVec consecutive elements (one 16-byte load for float).
// The mask is computed from the element's position (checkerboard, channel) or read (uint8); a
// group whose elements all pass through skips the log_scale and shift loads. Per-segment logdet
// sums are reduced with warp shuffles and then across segments by one small sum.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <initializer_list>

#include "affine_coupling/affine_coupling.h"
#include "common/vector_io.cuh"

namespace pygen::affine_coupling {
namespace {

constexpr int kWarpsPerBlock = 8;
constexpr int64_t kMaxSegment = 32 * kVec * 32;  // 4096 elements: 32 groups per lane

// A warp's share of the work: segments of `len` elements, `per_row` of them per sample.
struct Segments {
  int64_t len, per_row;
};

// Which elements of the group at position j of its sample pass through (invalid ones do); returns
// whether any element is transformed. Positions fit in 32 bits (checked on the host).
__device__ __forceinline__ bool group_keep(const Problem& p, const uint8_t* mask_row, int64_t j, int n,
                                           bool* keep) {
  switch (p.mask_kind) {
    case MaskKind::kChannel:
#pragma unroll
      for (int k = 0; k < kVec; ++k) keep[k] = k >= n || ((j + k) < p.split) == (p.parity == 0);
      break;
    case MaskKind::kCheckerboard: {
      const uint32_t width = static_cast<uint32_t>(p.width), height = static_cast<uint32_t>(p.height);
      const uint32_t parity = static_cast<uint32_t>(p.parity);
      if (width % kVec == 0) {  // the group lies on one line: one division for all of it
        const uint32_t pos = static_cast<uint32_t>(j), line = pos / width;
        const uint32_t base = (line % height) + (pos - line * width) + parity;
#pragma unroll
        for (int k = 0; k < kVec; ++k) keep[k] = k >= n || ((base + k) & 1u) == 0;
      } else {
#pragma unroll
        for (int k = 0; k < kVec; ++k) {
          const uint32_t pos = static_cast<uint32_t>(j + k), line = pos / width;
          keep[k] = k >= n || (((line % height) + (pos - line * width) + parity) & 1u) == 0;
        }
      }
      break;
    }
    case MaskKind::kRead:
#pragma unroll
      for (int k = 0; k < kVec; ++k) keep[k] = k >= n || mask_row[j + k] != 0;
      break;
  }
  bool any = false;
#pragma unroll
  for (int k = 0; k < kVec; ++k) any |= !keep[k];
  return any;
}

// Where element j of a row of log_scale, shift or their gradients lies from the row's start: j but
// for rows in runs (Problem::param_run, a channels-last x's stacked params). Positions fit in 32 bits.
__device__ __forceinline__ int64_t param_at(const Problem& p, int64_t j) {
  if (p.param_run == p.row_len) return j;
  const uint32_t e = static_cast<uint32_t>(j), run = static_cast<uint32_t>(p.param_run), q = e / run;
  return static_cast<int64_t>(q) * p.param_run_stride + (e - q * run);
}

// The group at position j of the row at `row` of log_scale, shift or a gradient. Aligned groups lie
// within a run (groups_aligned); others go element by element, across runs.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_params(const Problem& p, const scalar_t* row, int64_t j, int n, bool aligned,
                                            acc_t* out) {
  if (aligned || p.param_run == p.row_len) {
    load_group(row, param_at(p, j), n, aligned, out);
    return;
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k) out[k] = k < n ? static_cast<acc_t>(row[param_at(p, j + k)]) : acc_t(0);
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_params(const Problem& p, scalar_t* row, int64_t j, int n, bool aligned,
                                             const acc_t* in) {
  if (aligned || p.param_run == p.row_len) {
    store_group(row, param_at(p, j), n, aligned, in);
    return;
  }
#pragma unroll
  for (int k = 0; k < kVec; ++k)
    if (k < n) row[param_at(p, j + k)] = static_cast<scalar_t>(in[k]);
}

// Math in at::opmath_type: double for double inputs (gradcheck), float for every other dtype.
template <typename scalar_t, ScaleFn F>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
forward_kernel(Problem p, Segments seg, bool aligned, const scalar_t* __restrict__ x,
               const scalar_t* __restrict__ log_scale, const scalar_t* __restrict__ shift,
               const uint8_t* __restrict__ mask, scalar_t* __restrict__ y,
               at::opmath_type<scalar_t>* __restrict__ partial) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (warp >= p.rows * seg.per_row) return;
  const int64_t row = warp / seg.per_row;
  const int64_t begin = (warp - row * seg.per_row) * seg.len;
  const int64_t end = min(begin + seg.len, p.row_len);
  const int64_t base = row * p.row_len, a_base = row * p.log_scale_stride, t_base = row * p.shift_stride;
  const uint8_t* mask_row = mask ? mask + row * p.mask_row_stride : nullptr;
  const acc_t c = static_cast<acc_t>(p.clamp), ic = p.clamp > 0 ? acc_t(1) / c : acc_t(0);
  acc_t sum = 0;
  for (int64_t j = begin + lane * kVec; j < end; j += 32 * kVec) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kVec), end - j));
    bool keep[kVec];
    const bool any = group_keep(p, mask_row, j, n, keep);
    acc_t xv[kVec], a[kVec] = {}, t[kVec] = {}, out[kVec];
    load_group(x, base + j, n, aligned, xv);
    if (any) {
      if constexpr (F != ScaleFn::kNone) load_params(p, log_scale + a_base, j, n, aligned, a);
      load_params(p, shift + t_base, j, n, aligned, t);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t s = scale_log<F>(a[k], c, ic);
      const acc_t o = coupled<F>(xv[k], s, t[k], p.reverse);
      out[k] = keep[k] ? xv[k] : o;
      sum += keep[k] ? acc_t(0) : s;
    }
    store_group(y, base + j, n, aligned, out);
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) partial[warp] = p.reverse ? -sum : sum;
}

template <typename scalar_t, ScaleFn F>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
backward_kernel(Problem p, Segments seg, bool aligned, const scalar_t* __restrict__ grad_y,
                const at::opmath_type<scalar_t>* __restrict__ grad_logdet, const scalar_t* __restrict__ x,
                const scalar_t* __restrict__ log_scale, const scalar_t* __restrict__ shift,
                const uint8_t* __restrict__ mask, scalar_t* __restrict__ grad_x,
                scalar_t* __restrict__ grad_log_scale, scalar_t* __restrict__ grad_shift) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lane = threadIdx.x & 31;
  const int64_t warp = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (warp >= p.rows * seg.per_row) return;
  const int64_t row = warp / seg.per_row;
  const int64_t begin = (warp - row * seg.per_row) * seg.len;
  const int64_t end = min(begin + seg.len, p.row_len);
  const int64_t base = row * p.row_len, a_base = row * p.log_scale_stride, t_base = row * p.shift_stride;
  const int64_t g_base = row * p.param_grad_stride;
  const uint8_t* mask_row = mask ? mask + row * p.mask_row_stride : nullptr;
  const acc_t c = static_cast<acc_t>(p.clamp), ic = p.clamp > 0 ? acc_t(1) / c : acc_t(0);
  const acc_t gl = grad_logdet[row];
  for (int64_t j = begin + lane * kVec; j < end; j += 32 * kVec) {
    const int n = static_cast<int>(min(static_cast<int64_t>(kVec), end - j));
    bool keep[kVec];
    const bool any = group_keep(p, mask_row, j, n, keep);
    acc_t g[kVec], xv[kVec], a[kVec] = {}, t[kVec] = {}, dx[kVec], ds[kVec], dt[kVec];
    load_group(grad_y, base + j, n, aligned, g);
    load_group(x, base + j, n, aligned, xv);
    if (any) {
      if constexpr (F != ScaleFn::kNone) load_params(p, log_scale + a_base, j, n, aligned, a);
      if (p.reverse) load_params(p, shift + t_base, j, n, aligned, t);
    }
#pragma unroll
    for (int k = 0; k < kVec; ++k) {
      const acc_t s = scale_log<F>(a[k], c, ic);
      // forward: logdet = sum s; reverse: logdet = -sum s
      const CoupledGrads<acc_t> d = coupled_grads<F>(g[k], xv[k], s, t[k], p.reverse);
      dx[k] = keep[k] ? g[k] : d.x;
      dt[k] = keep[k] ? acc_t(0) : d.t;
      ds[k] = keep[k] ? acc_t(0) : (d.s + (p.reverse ? -gl : gl)) * scale_grad<F>(a[k], s, ic);
    }
    store_group(grad_x, base + j, n, aligned, dx);
    store_params(p, grad_shift + g_base, j, n, aligned, dt);
    if constexpr (F != ScaleFn::kNone) store_params(p, grad_log_scale + g_base, j, n, aligned, ds);
  }
}

Segments segments(const Problem& p) {
  constexpr int64_t kStep = 32 * kVec;
  const int64_t len = std::min(kMaxSegment, (p.row_len + kStep - 1) / kStep * kStep);
  return {len, (p.row_len + len - 1) / len};
}

dim3 grid(const Problem& p, const Segments& seg) {
  return dim3(static_cast<unsigned>((p.rows * seg.per_row + kWarpsPerBlock - 1) / kWarpsPerBlock));
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() && t.numel() > 0 ? t.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
scalar_t* mutable_or_null(at::Tensor& t) {
  return t.numel() > 0 ? t.mutable_data_ptr<scalar_t>() : nullptr;
}

// The vector path needs samples (and rows and runs of log_scale, shift and their gradients) a
// multiple of kVec elements long and apart, and every pointer aligned to a group.
template <typename scalar_t>
bool groups_aligned(const Problem& p, std::initializer_list<const at::Tensor*> tensors) {
  for (const int64_t stride :
       {p.row_len, p.log_scale_stride, p.shift_stride, p.param_grad_stride, p.param_run, p.param_run_stride})
    if (stride % kVec != 0) return false;
  for (const at::Tensor* t : tensors)
    if (t->defined() && t->numel() > 0 &&
        reinterpret_cast<uintptr_t>(t->const_data_ptr()) % sizeof(Vec<scalar_t>) != 0)
      return false;
  return true;
}

}  // namespace

void forward_cuda(const Problem& p, const at::Tensor& x, const at::Tensor& log_scale, const at::Tensor& shift,
                  const at::Tensor& mask, at::Tensor& y, at::Tensor& logdet) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const Segments seg = segments(p);
  // One partial sum per segment; with one segment per sample they are the logdet itself.
  at::Tensor partial = seg.per_row == 1 ? logdet : at::empty({p.rows, seg.per_row}, logdet.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool aligned = groups_aligned<scalar_t>(p, {&x, &log_scale, &shift, &y});
    with_scale_fn(p.scale_fn, [&](auto f) {
      forward_kernel<scalar_t, decltype(f)::value><<<grid(p, seg), kWarpsPerBlock * 32, 0, stream>>>(
          p, seg, aligned, x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(log_scale),
          shift.const_data_ptr<scalar_t>(), ptr_or_null<uint8_t>(mask), y.mutable_data_ptr<scalar_t>(),
          partial.mutable_data_ptr<acc_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  if (seg.per_row > 1) at::sum_out(logdet, partial, {1});
}

void backward_cuda(const Problem& p, const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                   const at::Tensor& log_scale, const at::Tensor& shift, const at::Tensor& mask,
                   at::Tensor& grad_x, at::Tensor& grad_log_scale, at::Tensor& grad_shift) {
  const c10::cuda::CUDAGuard guard(x.device());
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const Segments seg = segments(p);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool aligned = groups_aligned<scalar_t>(
        p, {&grad_y, &x, &log_scale, &shift, &grad_x, &grad_log_scale, &grad_shift});
    with_scale_fn(p.scale_fn, [&](auto f) {
      backward_kernel<scalar_t, decltype(f)::value><<<grid(p, seg), kWarpsPerBlock * 32, 0, stream>>>(
          p, seg, aligned, grad_y.const_data_ptr<scalar_t>(), grad_logdet.const_data_ptr<acc_t>(),
          x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(log_scale), shift.const_data_ptr<scalar_t>(),
          ptr_or_null<uint8_t>(mask), grad_x.mutable_data_ptr<scalar_t>(), mutable_or_null<scalar_t>(grad_log_scale),
          grad_shift.mutable_data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace pygen::affine_coupling
