// CUDA kernels of the cached PixelCNN sampler (algorithm and layout: pixelcnn.h). Everything runs
// on the current stream; the host waits only once per call, for the copy of the weights' pointer
// table, never per row or value. Per image row:
//  - the vertical stack of every layer for the whole row and batch: the layer's input rows live
//    in a zero-padded channels-last buffer; the kh rows its kernel reaches go through one cuDNN
//    convolution (at::conv2d: it follows torch.backends.cudnn.allow_tf32, like the model's own
//    forward pass), bias_gate_kernel adds the per-sample bias and gates into the next layer's
//    buffer, and cuBLAS computes the link projection;
//  - one launch of row_kernel: each block owns S samples and runs every value of the row for them
//    (all layers, the head, softmax and the inverse-CDF draw). The layers' horizontal inputs stay
//    in shared memory as a ring of the kw columns the masked kernel reaches. Samples are
//    independent, so blocks never wait for each other; the weights stream from L2, shared by the
//    S samples of a block.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#include "common/philox.h"
#include "common/vector_io.cuh"
#include "pixelcnn/pixelcnn.h"

namespace pygen::pixelcnn {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxSamplesPerBlock = 8;

int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

template <typename A>
__device__ __forceinline__ A gate_value(A a, A b) {
  return tanh(a) / (A(1) + exp(-b));
}

// Row i of layer 0's vertical input is the image's row i - 1, scaled to [-1, 1]: written into
// row i + pad of v_in (B, H + pad, W + 2 pad, C), whose first pad rows and columns stay zero.
template <typename T>
__global__ void image_row_kernel(const int64_t* __restrict__ images, T* __restrict__ v_in,
                                 int64_t batch, int channels, int height, int width, int pad,
                                 int row, float scale) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= batch * width * channels) return;
  const int c = static_cast<int>(idx % channels);
  const int64_t bw = idx / channels;
  const int w = static_cast<int>(bw % width);
  const int64_t b = bw / width;
  const int64_t level = images[((b * channels + c) * height + row - 1) * width + w];
  const int64_t wv = width + 2 * pad;
  v_in[((b * (height + pad) + row + pad) * wv + pad + w) * channels + c] =
      static_cast<T>(static_cast<float>(level) * scale - 1.0f);
}

// v_pre[r, :] += v_b[sample of r, :]; unless v_next is null, the gated output goes to row
// `row` (padded) of the next layer's vertical input (B, rows, W + 2 pad, h).
template <typename T>
__global__ void bias_gate_kernel(T* __restrict__ v_pre, const T* __restrict__ v_b,
                                 T* __restrict__ v_next, int64_t n_pix, int width, int hidden,
                                 int rows, int pad, int row) {
  using A = at::opmath_type<T>;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_pix * hidden) return;
  const int64_t r = idx / hidden, b = r / width, w = r % width;
  const int o = static_cast<int>(idx % hidden), h2 = 2 * hidden;
  const A a = static_cast<A>(v_pre[r * h2 + o]) + static_cast<A>(v_b[b * h2 + o]);
  const A g = static_cast<A>(v_pre[r * h2 + hidden + o]) + static_cast<A>(v_b[b * h2 + hidden + o]);
  v_pre[r * h2 + o] = static_cast<T>(a);
  v_pre[r * h2 + hidden + o] = static_cast<T>(g);
  if (v_next != nullptr) {
    const int64_t wv = width + 2 * pad;
    v_next[((b * rows + row) * wv + pad + w) * hidden + o] = static_cast<T>(gate_value(a, g));
  }
}

template <typename T>
struct RowArgs {
  const T* const* weights;  // device table of the flat weight list (pixelcnn.h)
  const T* link;            // (layers, B * W, 2h): link projections of the row's vertical stack
  const T* noise;           // (B, C, H, W) uniforms, or null: Philox uniforms of *seed
  const int64_t* seed;
  int64_t* images;  // (B, C, H, W)
  T* logits;        // (B, L, C, H, W) or null
  int batch, channels, height, width, levels, hidden, layers, row, ring_width;
  float temperature, scale;
};

// Weight loads a thread issues before their first use: enough bytes in flight per multiprocessor
// to cover the L2 round trip (512 threads x 8 x 16 bytes = 64 KB). Halved where the accumulators
// take more registers (many samples, double).
constexpr int kLoadsInFlight = 8;
template <int S, typename A>
constexpr int unroll_for() {
  return sizeof(A) > 4 || S > 4 ? kLoadsInFlight / 2 : kLoadsInFlight;
}

// acc[s][v] += sum_{q in [q0, q1)} x[s * ldx + q] * w[q * ldw + v] for s < S, v < kVec: one
// kVec-wide load per q (16 bytes for float when aligned; `valid` columns otherwise), a chunk of
// them issued before their first use. The chunk past q1 is predicated off, so a tail costs one
// round trip, not one per q.
template <int S, bool kAligned, typename T, typename A>
__device__ __forceinline__ void dot_group(const A* x, int ldx, const T* __restrict__ w, int ldw,
                                          int valid, int q0, int q1, A (&acc)[S][kVec]) {
  constexpr int kUnroll = unroll_for<S, A>();
  for (int q = q0; q < q1; q += kUnroll) {
    A wq[kUnroll][kVec];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (q + u < q1) {
        load_group(w, static_cast<int64_t>(q + u) * ldw, valid, kAligned, wq[u]);
      } else {
#pragma unroll
        for (int v = 0; v < kVec; ++v) wq[u][v] = A(0);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (q + u < q1) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
          const A xv = x[s * ldx + q + u];
#pragma unroll
          for (int v = 0; v < kVec; ++v) acc[s][v] += xv * wq[u][v];
        }
      }
    }
  }
}

// y[s * ldy + o] = sum_q x[s * ldx + q] * w[q * ldw + o] for s < S, o < n. Thread t owns the
// kVec outputs of column group t % cols and a 1/G slice of q (G = blockDim / cols), so every
// thread works at any width; the G partial sums meet in `partial` (blockDim * kVec * S values).
// Ends with a barrier.
template <int S, bool kAligned, typename T, typename A>
__device__ void matvec_groups(const A* x, int ldx, const T* __restrict__ w, int ldw, int k, int n,
                              A* partial, A* y, int ldy) {
  const int t = threadIdx.x, cols = (n + kVec - 1) / kVec, splits = max(1, kThreads / cols);
  if (splits == 1) {  // wide outputs: each thread walks all of q for its column groups
    for (int c = t; c < cols; c += kThreads) {
      const int o = c * kVec, valid = min(kVec, n - o);
      A acc[S][kVec] = {};
      dot_group<S, kAligned>(x, ldx, w + o, ldw, valid, 0, k, acc);
#pragma unroll
      for (int s = 0; s < S; ++s) {
        for (int v = 0; v < valid; ++v) y[s * ldy + o + v] = acc[s][v];
      }
    }
    __syncthreads();
    return;
  }
  const int g = t / cols, c = t % cols;
  if (g < splits) {
    const int o = c * kVec, valid = min(kVec, n - o);
    A acc[S][kVec] = {};
    dot_group<S, kAligned>(x, ldx, w + o, ldw, valid, g * k / splits, (g + 1) * k / splits, acc);
#pragma unroll
    for (int s = 0; s < S; ++s) {
      for (int v = 0; v < valid; ++v) partial[(g * S + s) * n + o + v] = acc[s][v];
    }
  }
  __syncthreads();
  for (int e = t; e < S * n; e += kThreads) {
    const int s = e / n, o = e % n;
    A sum = 0;
    for (int gg = 0; gg < splits; ++gg) sum += partial[(gg * S + s) * n + o];
    y[s * ldy + o] = sum;
  }
  __syncthreads();
}

// matvec_groups with whole-vector loads when every row of w starts on a vector boundary.
template <int S, typename T, typename A>
__device__ void matvec(const A* x, int ldx, const T* __restrict__ w, int ldw, int k, int n,
                       A* partial, A* y, int ldy) {
  const bool aligned = n % kVec == 0 && ldw % kVec == 0 &&
                       reinterpret_cast<uintptr_t>(w) % sizeof(Vec<T>) == 0;
  if (aligned) {
    matvec_groups<S, true>(x, ldx, w, ldw, k, n, partial, y, ldy);
  } else {
    matvec_groups<S, false>(x, ldx, w, ldw, k, n, partial, y, ldy);
  }
}

// The inverse-CDF draw of pygen/sampling/draw.py by one warp: lane l owns a run of consecutive
// levels; a warp scan of the runs' sums finds the lane whose run crosses u * total, which then
// walks its run. Returns the level in every lane.
template <typename A>
__device__ int warp_draw(const A* logits, int levels, A temperature, A u) {
  const int lane = threadIdx.x & 31, per = (levels + 31) / 32;
  const int lo = min(lane * per, levels), hi = min(lo + per, levels);
  A top = -INFINITY;
  for (int l = lo; l < hi; ++l) top = max(top, logits[l] / temperature);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) top = max(top, __shfl_xor_sync(0xffffffffu, top, off));
  A run = 0;
  for (int l = lo; l < hi; ++l) run += exp(logits[l] / temperature - top);
  A incl = run;
#pragma unroll
  for (int off = 1; off < 32; off <<= 1) {
    const A v = __shfl_up_sync(0xffffffffu, incl, off);
    if (lane >= off) incl += v;
  }
  A excl = __shfl_up_sync(0xffffffffu, incl, 1);
  if (lane == 0) excl = 0;
  const A threshold = u * __shfl_sync(0xffffffffu, incl, 31);
  const unsigned crossing = __ballot_sync(0xffffffffu, lo < hi && incl > threshold);
  if (crossing == 0) return levels - 1;
  const int owner = __ffs(crossing) - 1;
  int level = hi - 1;
  if (lane == owner) {
    A cdf = excl;
    for (int l = lo; l < hi; ++l) {
      cdf += exp(logits[l] / temperature - top);
      if (cdf > threshold) {
        level = l;
        break;
      }
    }
  }
  return __shfl_sync(0xffffffffu, level, owner);
}

// Every value of image row p.row for samples [blockIdx.x * S, + S): see the file comment.
// Shared memory (A = float, or double for double weights), with hm = max(hidden, channels):
//   ring    [layers][S][kw][hm]  horizontal input of each layer, column x in slot x % kw
//   window  [S][kw * hm]         the current layer's input window, gathered for matvec
//   pre     [S][2h]  gated [S][h]  top [S][h]  hid [S][h]  logit [S][levels]
//   partial [kThreads * kVec * S] matvec's partial sums
template <typename T, int S>
__global__ void __launch_bounds__(kThreads, 1) row_kernel(RowArgs<T> p) {
  using A = at::opmath_type<T>;
  extern __shared__ unsigned char smem_raw[];
  A* smem = reinterpret_cast<A*>(smem_raw);
  const int h = p.hidden, h2 = 2 * h, kw = p.ring_width, pad = kw - 1;
  const int hm = max(h, p.channels), levels = p.levels;
  A* ring = smem;
  A* window = ring + static_cast<int64_t>(p.layers) * S * kw * hm;
  A* pre = window + S * kw * hm;
  A* gated = pre + S * h2;
  A* top = gated + S * h;
  A* hid = top + S * h;
  A* logit = hid + S * h;
  A* partial = logit + S * levels;
  const int t = threadIdx.x, warp = t >> 5;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * S;
  const int n_here = static_cast<int>(min(static_cast<int64_t>(S), p.batch - b0));
  const uint64_t seed = p.noise == nullptr ? static_cast<uint64_t>(*p.seed) : 0;
  const int64_t plane = static_cast<int64_t>(p.channels) * p.height * p.width;
  const int64_t n_pix = static_cast<int64_t>(p.batch) * p.width;
  const T* const* wt = p.weights;
  const T* w1 = wt[p.layers * kPerLayer + kW1];
  const T* b1 = wt[p.layers * kPerLayer + kB1];
  const T* w2 = wt[p.layers * kPerLayer + kW2];
  const T* b2 = wt[p.layers * kPerLayer + kB2];

  for (int64_t e = t; e < static_cast<int64_t>(p.layers) * S * kw * hm; e += kThreads) ring[e] = 0;
  __syncthreads();
  for (int j = 0; j < p.width; ++j) {
    const int cur = j % kw;
    for (int c = 0; c < p.channels; ++c) {
      if (c == 0) {  // layer 0's current column: values of later channels read as zero
        for (int e = t; e < S * p.channels; e += kThreads)
          ring[((e / p.channels) * kw + cur) * hm + e % p.channels] = 0;
        __syncthreads();
      }
      for (int l = 0; l < p.layers; ++l) {
        const int cin = l == 0 ? p.channels : h, k = kw * cin;
        const T* const* lw = wt + l * kPerLayer;
        A* ring_l = ring + static_cast<int64_t>(l) * S * kw * hm;
        for (int e = t; e < S * k; e += kThreads) {  // window (s, dj, ci): column j - pad + dj
          const int s = e / k, q = e % k, dj = q / cin, col = j - pad + dj;
          window[s * k + q] = col < 0 ? A(0) : ring_l[(s * kw + col % kw) * hm + q % cin];
        }
        __syncthreads();
        matvec<S>(window, k, lw[kHW], h2, k, h2, partial, pre, h2);
        for (int e = t; e < S * h; e += kThreads) {
          const int s = e / h, o = e % h;
          const int64_t b = min(b0 + s, static_cast<int64_t>(p.batch) - 1);
          const T* hb = lw[kHB] + b * h2;
          const T* link = p.link + (l * n_pix + b * p.width + j) * h2;
          const A a = pre[s * h2 + o] + static_cast<A>(hb[o]) + static_cast<A>(link[o]);
          const A g = pre[s * h2 + h + o] + static_cast<A>(hb[h + o]) + static_cast<A>(link[h + o]);
          gated[s * h + o] = gate_value(a, g);
        }
        __syncthreads();
        matvec<S>(gated, h, lw[kOutW], h, h, h, partial, pre, h);
        // The layer's output at (i, j) goes to the next layer's ring (current column), the last
        // layer's to `top`; layers after the first add their input (residual connection).
        const bool last = l + 1 == p.layers;
        A* next = ring + static_cast<int64_t>(l + 1) * S * kw * hm;
        for (int e = t; e < S * h; e += kThreads) {
          const int s = e / h, o = e % h;
          A v = pre[s * h + o] + static_cast<A>(lw[kOutB][o]);
          if (l > 0) v += ring_l[(s * kw + cur) * hm + o];
          if (last) {
            top[s * h + o] = max(v, A(0));  // the head starts with a ReLU
          } else {
            next[(s * kw + cur) * hm + o] = v;
          }
        }
        __syncthreads();
      }
      // Head: 1x1 -> ReLU -> 1x1, only the logits of channel c.
      matvec<S>(top, h, w1, h, h, h, partial, hid, h);
      for (int e = t; e < S * h; e += kThreads) hid[e] = max(hid[e] + static_cast<A>(b1[e % h]), A(0));
      __syncthreads();
      matvec<S>(hid, h, w2 + c * levels, p.channels * levels, h, levels, partial, logit, levels);
      for (int e = t; e < S * levels; e += kThreads)
        logit[e] += static_cast<A>(b2[c * levels + e % levels]);
      __syncthreads();
      for (int s = warp; s < n_here; s += kWarps) {
        const int64_t b = b0 + s;
        const int64_t at_c = (static_cast<int64_t>(c) * p.height + p.row) * p.width + j;
        const int64_t g = b * plane + at_c;
        const A u = p.noise != nullptr ? static_cast<A>(p.noise[g]) : static_cast<A>(uniform_at(g, seed));
        const A* lg = logit + s * levels;
        const int level = warp_draw(lg, levels, static_cast<A>(p.temperature), u);
        if ((t & 31) == 0) {
          p.images[g] = level;
          ring[(s * kw + cur) * hm + c] = static_cast<A>(level) * static_cast<A>(p.scale) - A(1);
        }
        if (p.logits != nullptr) {
          for (int l = t & 31; l < levels; l += 32)
            p.logits[(b * levels + l) * plane + at_c] = static_cast<T>(lg[l]);
        }
      }
      __syncthreads();
    }
  }
}

int64_t row_smem_bytes(const Problem& p, int64_t samples, int64_t elem) {
  const int64_t kw = p.kernel / 2 + 1, hm = std::max(p.hidden, p.channels);
  const int64_t per_sample =
      p.layers * kw * hm + kw * hm + 5 * p.hidden + p.levels + kThreads * kVec;
  return samples * per_sample * elem;
}

template <typename T, int S>
void launch_row(const Problem& p, const RowArgs<T>& args, int64_t smem, cudaStream_t stream) {
  auto kernel = row_kernel<T, S>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  const int blocks = static_cast<int>((p.batch + S - 1) / S);
  kernel<<<blocks, kThreads, smem, stream>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
void run(const Problem& p, const RowPlan& plan, const std::vector<at::Tensor>& weights,
         const at::Tensor& noise, const at::Tensor& seed, at::Tensor& images, at::Tensor& logits) {
  const auto opts = weights[0].options();
  const int64_t bsz = p.batch, width = p.width, h = p.hidden, h2 = 2 * h, pad = p.kernel / 2;
  const int64_t kh = pad + 1, wv = width + 2 * pad, rows = p.height + pad, n_pix = bsz * width;
  const float scale = static_cast<float>(2.0 / static_cast<double>(p.levels - 1));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  std::vector<int64_t> addresses;
  for (const auto& t : weights) addresses.push_back(reinterpret_cast<int64_t>(t.const_data_ptr<T>()));
  const at::Tensor table =
      at::tensor(addresses, at::TensorOptions().dtype(at::kLong)).to(opts.device(), /*non_blocking=*/false);

  // Vertical inputs, channels last, zero-padded (k//2 rows above, k//2 columns each side), and
  // each layer's vertical kernel as a channels-last (2h, Cin, kh, k) convolution weight.
  std::vector<at::Tensor> v_in, v_conv;
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t cin = l == 0 ? p.channels : h;
    v_in.push_back(at::zeros({bsz, rows, wv, cin}, opts));
    const at::Tensor& v_w = weights[l * kPerLayer + kVW];  // (kh * k * Cin, 2h)
    v_conv.push_back(v_w.t().contiguous().view({h2, kh, p.kernel, cin}).permute({0, 3, 1, 2}));
  }
  at::Tensor link = at::empty({p.layers, n_pix, h2}, opts);

  RowArgs<T> args{reinterpret_cast<const T* const*>(table.const_data_ptr<int64_t>()),
                  link.const_data_ptr<T>(),
                  noise.defined() ? noise.const_data_ptr<T>() : nullptr,
                  seed.defined() ? seed.const_data_ptr<int64_t>() : nullptr,
                  images.mutable_data_ptr<int64_t>(),
                  p.return_logits ? logits.mutable_data_ptr<T>() : nullptr,
                  static_cast<int>(bsz), static_cast<int>(p.channels), static_cast<int>(p.height),
                  static_cast<int>(width), static_cast<int>(p.levels), static_cast<int>(h),
                  static_cast<int>(p.layers), 0, static_cast<int>(kh),
                  static_cast<float>(p.temperature), scale};

  for (int64_t i = 0; i < p.height; ++i) {
    if (i > 0) {
      image_row_kernel<<<blocks_for(n_pix * p.channels), kThreads, 0, stream>>>(
          images.const_data_ptr<int64_t>(), v_in[0].mutable_data_ptr<T>(), bsz,
          static_cast<int>(p.channels), static_cast<int>(p.height), static_cast<int>(width),
          static_cast<int>(pad), static_cast<int>(i), scale);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    for (int64_t l = 0; l < p.layers; ++l) {
      // Rows i - pad .. i of the layer's input (padded rows i .. i + pad): output (B, 2h, 1, W).
      const at::Tensor window = v_in[l].narrow(1, i, kh).permute({0, 3, 1, 2});
      at::Tensor v_pre = at::conv2d(window, v_conv[l]).permute({0, 2, 3, 1}).reshape({n_pix, h2});
      const bool last = l + 1 == p.layers;
      bias_gate_kernel<<<blocks_for(n_pix * h), kThreads, 0, stream>>>(
          v_pre.mutable_data_ptr<T>(), weights[l * kPerLayer + kVB].const_data_ptr<T>(),
          last ? nullptr : v_in[l + 1].mutable_data_ptr<T>(), n_pix, static_cast<int>(width),
          static_cast<int>(h), static_cast<int>(rows), static_cast<int>(pad),
          static_cast<int>(i + pad));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor link_l = link.select(0, l);
      at::mm_out(link_l, v_pre, weights[l * kPerLayer + kLinkW]);
    }
    args.row = static_cast<int>(i);
    switch (plan.samples) {
      case 1: launch_row<T, 1>(p, args, plan.smem_bytes, stream); break;
      case 2: launch_row<T, 2>(p, args, plan.smem_bytes, stream); break;
      case 4: launch_row<T, 4>(p, args, plan.smem_bytes, stream); break;
      default: launch_row<T, 8>(p, args, plan.smem_bytes, stream); break;
    }
  }
}

}  // namespace

RowPlan plan_cuda_rows(const Problem& p, const at::Tensor& ref) {
  const c10::cuda::CUDAGuard guard(ref.device());
  const int64_t elem = ref.scalar_type() == at::kDouble ? 8 : 4;  // the math type's size
  int device = 0, sms = 0, smem_optin = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  // Samples per block: enough blocks to fill the multiprocessors, within the shared memory.
  int64_t samples = 1;
  while (samples < kMaxSamplesPerBlock && samples * sms < p.batch) samples *= 2;
  if (const char* forced = std::getenv("PYGEN_PIXELCNN_SAMPLES_PER_BLOCK")) {  // for tuning runs
    samples = std::clamp<int64_t>(std::atoll(forced), 1, kMaxSamplesPerBlock);
  }
  while (samples > 1 && row_smem_bytes(p, samples, elem) > smem_optin) samples /= 2;
  return {samples, row_smem_bytes(p, samples, elem), smem_optin};
}

void sample_cuda(const Problem& p, const RowPlan& plan, const std::vector<at::Tensor>& weights,
                 const at::Tensor& noise, const at::Tensor& seed, at::Tensor& images,
                 at::Tensor& logits) {
  const c10::cuda::CUDAGuard guard(weights[0].device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights[0].scalar_type(),
                                  "pixelcnn_sample_cuda", [&] {
                                    run<scalar_t>(p, plan, weights, noise, seed, images, logits);
                                  });
}

}  // namespace pygen::pixelcnn
