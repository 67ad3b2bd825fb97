// CUDA kernels of the cached PixelCNN sampler (algorithm and layout: pixelcnn.h). Everything runs
// on the current stream; the host waits only once per call, for the copy of the weights' pointer
// table, never per row or value. Per image row:
//  - the vertical stack of every layer for the whole row and batch: the kh input rows its kernel
//    reaches live in a zero-padded channels-last ring (ring_at) and go through one cuDNN
//    convolution (at::conv2d: it follows torch.backends.cudnn.allow_tf32, like the model's own
//    forward pass), bias_gate_kernel adds the per-sample bias and gates into the next layer's
//    ring, and cuBLAS computes the link projection;
//  - one launch of row_kernel: each block owns S samples and runs every value of the row for them
//    (all layers, the head, softmax and the inverse-CDF draw). The layers' horizontal inputs stay
//    in shared memory as a ring of the kw columns the masked kernel reaches. Samples are
//    independent, so blocks never wait for each other; the weights stream from L2, shared by the
//    S samples of a block. Or (PYGEN_PIXELCNN_CLUSTER=N, sm_90+) one launch of cluster_row_kernel:
//    a cluster of N blocks shares each sample group, every product split across its blocks; with
//    PYGEN_PIXELCNN_FOLDED=1 each layer's output product folded into the next layer's gate product
//    (fold_gate_kernel), one cluster barrier per layer instead of two; with
//    PYGEN_PIXELCNN_TENSOR_CORES=1 (groups of 16 samples) its products on mma.sync tiles.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cooperative_groups.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "common/cuda_draw.cuh"
#include "common/math.h"
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

// Where value c of column w of padded row `row` (image row row - pad) lives in a layer's vertical
// input: a ring (B, W + 2 pad, kh, C) of the kh = pad + 1 rows its kernel reaches, row r in slot
// r % kh, the pad columns each side zero. The kh rows of a step are then one contiguous
// convolution input, whatever the step (see run()).
__host__ __device__ inline int64_t ring_at(int64_t b, int w, int row, int c, int width, int pad, int channels) {
  const int kh = pad + 1;
  return ((b * (width + 2 * pad) + pad + w) * kh + row % kh) * channels + c;
}

// Row i of layer 0's vertical input is the image's row i - 1, scaled to [-1, 1]: written into
// padded row i + pad of v_in (ring_at); the ring starts zero, which stands for the rows above
// the image.
template <typename T>
__global__ void image_row_kernel(const int64_t* __restrict__ images, T* __restrict__ v_in,
                                 int64_t batch, int channels, int height, int width, int pad,
                                 int row, double scale) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= batch * width * channels) return;
  const int c = static_cast<int>(idx % channels);
  const int64_t bw = idx / channels;
  const int w = static_cast<int>(bw % width);
  const int64_t b = bw / width;
  const int64_t level = images[((b * channels + c) * height + row - 1) * width + w];
  using A = at::opmath_type<T>;  // double for a float64 model: the CPU kernel's and the twin's
  v_in[ring_at(b, w, row + pad, c, width, pad, channels)] =
      static_cast<T>(static_cast<A>(level) * static_cast<A>(scale) - A(1));
}

// Pixel r, unit o of the vertical stack: the pre-activations plus the sample's bias, (a, g), as
// stored in T; unless v_next is null, the gated output goes to padded row `row` of the next
// layer's vertical input (ring_at).
template <typename T>
__device__ __forceinline__ void bias_gate_at(const T* __restrict__ v_pre, const T* __restrict__ v_b,
                                             T* __restrict__ v_next, int64_t r, int o, int width,
                                             int hidden, int pad, int row, T& a_out,
                                             T& g_out) {
  using A = at::opmath_type<T>;
  const int64_t b = r / width, w = r % width;
  const int h2 = 2 * hidden;
  const A a = static_cast<A>(v_pre[r * h2 + o]) + static_cast<A>(v_b[b * h2 + o]);
  const A g = static_cast<A>(v_pre[r * h2 + hidden + o]) + static_cast<A>(v_b[b * h2 + hidden + o]);
  a_out = static_cast<T>(a);
  g_out = static_cast<T>(g);
  if (v_next != nullptr) {
    v_next[ring_at(b, static_cast<int>(w), row, o, width, pad, hidden)] = static_cast<T>(gate_value(a, g));
  }
}

// v_pre[r, :] += v_b[sample of r, :], and the gated output into v_next (bias_gate_at).
template <typename T>
__global__ void bias_gate_kernel(T* __restrict__ v_pre, const T* __restrict__ v_b,
                                 T* __restrict__ v_next, int64_t n_pix, int width, int hidden, int pad,
                                 int row) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n_pix * hidden) return;
  const int64_t r = idx / hidden;
  const int o = static_cast<int>(idx % hidden), h2 = 2 * hidden;
  T a, g;
  bias_gate_at(v_pre, v_b, v_next, r, o, width, hidden, pad, row, a, g);
  v_pre[r * h2 + o] = a;
  v_pre[r * h2 + hidden + o] = g;
}

// bias_gate_kernel and the link product link[r, :] = v_pre[r, :] (biased) @ link_w (2h, 2h) in
// one launch, kLinkPixels pixels per block (the plan's choice at small batches): there the
// product has a few hundred rows, and the bias kernel and cuBLAS took ~12 us per layer and row on
// an H200 (mnist28 b1, 2026-11-27). Sums in A over k in order; each weight row is read once per
// block, coalesced across the threads' outputs.
constexpr int kLinkPixels = 4;

template <typename T>
__global__ void bias_gate_link_kernel(const T* __restrict__ v_pre, const T* __restrict__ v_b,
                                      T* __restrict__ v_next, const T* __restrict__ link_w,
                                      T* __restrict__ link, int64_t n_pix, int width, int hidden,
                                      int pad, int row) {
  using A = at::opmath_type<T>;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* biased = reinterpret_cast<A*>(smem_raw);  // [kLinkPixels][2h], zero past the last pixel
  const int h2 = 2 * hidden;
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kLinkPixels;
  const int n = static_cast<int>(n_pix - r0 < kLinkPixels ? n_pix - r0 : kLinkPixels);
  for (int idx = threadIdx.x; idx < kLinkPixels * hidden; idx += blockDim.x) {
    const int q = idx / hidden, o = idx % hidden;
    T a = T(0), g = T(0);
    if (q < n) bias_gate_at(v_pre, v_b, v_next, r0 + q, o, width, hidden, pad, row, a, g);
    biased[q * h2 + o] = static_cast<A>(a);
    biased[q * h2 + hidden + o] = static_cast<A>(g);
  }
  __syncthreads();
  for (int j = threadIdx.x; j < h2; j += blockDim.x) {
    A sums[kLinkPixels] = {};
    for (int k = 0; k < h2; ++k) {
      const A wk = static_cast<A>(link_w[static_cast<int64_t>(k) * h2 + j]);
#pragma unroll
      for (int q = 0; q < kLinkPixels; ++q) sums[q] += biased[q * h2 + k] * wk;
    }
    for (int q = 0; q < n; ++q) link[(r0 + q) * h2 + j] = static_cast<T>(sums[q]);
  }
}

// bias_gate_link_kernel's shared memory: kLinkPixels rows of 2h values of the math type.
inline int64_t link_smem_bytes(const Problem& p, int64_t math_bytes) {
  return kLinkPixels * 2 * p.hidden * math_bytes;
}

template <typename T>
struct RowArgs {
  const T* const* weights;  // device table of the flat weight list (pixelcnn.h)
  const T* link;            // (layers, B * W, 2h): link projections of the row's vertical stack
  const T* noise;           // (B, C, H, W) uniforms, or null: Philox uniforms of *seed
  const int64_t* seed;
  const int64_t* given;     // (B, C, H, W) levels kept, -1 where drawn; or null: all drawn
  int64_t* images;  // (B, C, H, W)
  T* logits;        // (B, L, C, H, W) or null
  int batch, channels, height, width, levels, hidden, layers, row, ring_width;
  double temperature, scale;  // cast to the math type A in the kernels
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

// One warp draws value (c, p.row, j) of sample b from its logits `lg` (with the given uniform or
// Philox uniform of `seed`; a given level is kept) and writes its scaled level to `ring_slot`, the
// layer-0 input of the values after it; with `outputs`, also the level into the images and the
// logits.
template <typename T, typename A>
__device__ __forceinline__ void draw_value(const RowArgs<T>& p, const A* lg, int64_t b, int c, int j,
                                           uint64_t seed, A* ring_slot, bool outputs) {
  const int64_t plane = static_cast<int64_t>(p.channels) * p.height * p.width;
  const int64_t at_c = (static_cast<int64_t>(c) * p.height + p.row) * p.width + j;
  const int64_t g = b * plane + at_c;
  const int level =
      warp_level(p.noise, seed, p.given, g, lg, p.levels, static_cast<A>(p.temperature));
  const int lane = threadIdx.x & 31;
  if (lane == 0) {
    *ring_slot = static_cast<A>(level) * static_cast<A>(p.scale) - A(1);
    if (outputs) p.images[g] = level;
  }
  if (outputs && p.logits != nullptr) {
    for (int l = lane; l < p.levels; l += 32) p.logits[(b * p.levels + l) * plane + at_c] = static_cast<T>(lg[l]);
  }
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
            top[s * h + o] = relu(v);  // the head starts with a ReLU
          } else {
            next[(s * kw + cur) * hm + o] = v;
          }
        }
        __syncthreads();
      }
      // Head: 1x1 -> ReLU -> 1x1, only the logits of channel c.
      matvec<S>(top, h, w1, h, h, h, partial, hid, h);
      for (int e = t; e < S * h; e += kThreads) hid[e] = relu(hid[e] + static_cast<A>(b1[e % h]));
      __syncthreads();
      matvec<S>(hid, h, w2 + c * levels, p.channels * levels, h, levels, partial, logit, levels);
      for (int e = t; e < S * levels; e += kThreads)
        logit[e] += static_cast<A>(b2[c * levels + e % levels]);
      __syncthreads();
      for (int s = warp; s < n_here; s += kWarps) {
        draw_value(p, logit + s * levels, b0 + s, c, j, seed, ring + (s * kw + cur) * hm + c, true);
      }
      __syncthreads();
    }
  }
}

// ---------------------------------------------------------------- the cluster kernel (sm_90+)
// At small batches one block per sample group leaves the card idle and streams every weight
// through one multiprocessor per value. Here a thread-block cluster of N blocks shares each group
// of S samples: block r computes the r-th slice of every product's outputs (one warp per output,
// lanes splitting K over output-major weight rows, a reduction by halving exchanges) and writes
// each result into every block's copy of the activations through distributed shared memory; one
// cluster barrier ends each product (2 per layer, 2 for the head). Every block then draws each value
// itself from identical logits and the same uniform, so the draw needs no exchange. The block's
// weight rows are copied into its shared memory at launch when they fit ("resident"), else read
// from the output-major copies in global memory (L2).
constexpr int kClusterThreads = 256;
constexpr int kClusterWarps = kClusterThreads / 32;
constexpr int kMaxCluster = 16;

// Tensor-core products (mma_products): a tile is 16 samples x 8 outputs of the math type.
constexpr int kTileSamples = 16;
constexpr int kTileValues = kTileSamples * 8;

// Offsets into a cluster block's shared memory: activations of type A first (elements), then the
// block's weight rows of type T (elements from `t_start` bytes). Shared by host and device.
// Folded, the gate products of layers 1.. take K = (kw + 1) h (fold_gate_kernel), and `gated`
// holds two layers' gated units (layer l at l % 2: one step reads the one, writes the other).
// With tensor cores, `tiles` holds a product's partial tiles (mma_products), and rows of K values
// (the products' inputs: window, gated, top, hid; the resident weight rows) are stride(K) apart.
struct ClusterLayout {
  int64_t ring, window, gated, top, hid, logit, gate_bias, out_b, b1, b2, tiles, a_elems;
  int64_t layer0_rows, layer_rows, w1, w2, t_elems;
  int sh, sl, hm, k0, k;  // output slices (hidden, levels), ring width, K of layer 0 and others
  bool tensor_cores;
  int hld;  // stride(hidden): the rows of gated, top and hid

  __host__ __device__ ClusterLayout(int layers, int samples, int kw, int hidden, int channels,
                                    int levels, int blocks, bool folded, bool tensor_cores) {
    sh = (hidden + blocks - 1) / blocks;
    sl = (levels + blocks - 1) / blocks;
    hm = hidden > channels ? hidden : channels;
    k0 = kw * channels;
    k = (kw + (folded ? 1 : 0)) * hidden;
    this->tensor_cores = tensor_cores;
    hld = stride(hidden);
    ring = 0;
    window = ring + static_cast<int64_t>(layers) * samples * kw * hm;
    gated = window + static_cast<int64_t>(samples) * (stride(k) > stride(k0) ? stride(k) : stride(k0));
    top = gated + 2 * static_cast<int64_t>(samples) * hld;
    hid = top + static_cast<int64_t>(samples) * hld;
    logit = hid + static_cast<int64_t>(samples) * hld;
    gate_bias = logit + samples * levels;  // [layers][S][2][sh]: h_b + link of this column
    out_b = gate_bias + static_cast<int64_t>(layers) * samples * 2 * sh;
    b1 = out_b + static_cast<int64_t>(layers) * sh;
    b2 = b1 + sh;  // [channels][sl]
    tiles = b2 + static_cast<int64_t>(channels) * sl;
    // A product's work items: its column tiles (gate pairs: 2 per 8 units), or one per warp.
    int items = 2 * ((sh + 7) / 8);
    items = items > (sl + 7) / 8 ? items : (sl + 7) / 8;
    items = items > kClusterWarps ? items : kClusterWarps;
    a_elems = tiles + (tensor_cores ? static_cast<int64_t>(items) * kTileValues : 0);
    // Per layer: sh gate rows (a), sh gate rows (g), sh output rows. Head: sh rows of w1, then
    // channels x sl rows of w2.
    layer0_rows = 2 * static_cast<int64_t>(sh) * stride(k0) + static_cast<int64_t>(sh) * hld;
    layer_rows = 2 * static_cast<int64_t>(sh) * stride(k) + static_cast<int64_t>(sh) * hld;
    w1 = layer0_rows + (layers - 1) * layer_rows;
    w2 = w1 + static_cast<int64_t>(sh) * hld;
    t_elems = w2 + static_cast<int64_t>(channels) * sl * hld;
  }
  // Rows of k values lie stride(k) apart: k without tensor cores; with them an even stride, so
  // that a lane's two values of a k-step load as one 8-byte access, and for k a multiple of 8 one
  // of 8 or 24 words mod 32, so that the 16 lanes of a half-warp's loads (rows g = 0..3, 8 words
  // each) reach 32 different banks.
  __host__ __device__ int stride(int n) const { return !tensor_cores ? n : n % 16 == 0 ? n + 8 : n + n % 2; }
  __host__ __device__ int gate_k(int l) const { return l == 0 ? k0 : k; }
  __host__ __device__ int64_t layer(int l) const { return l == 0 ? 0 : layer0_rows + (l - 1) * layer_rows; }
  // Where layer l's output weight rows start (after its 2 sh gate rows).
  __host__ __device__ int64_t out_rows(int l) const {
    return layer(l) + 2 * static_cast<int64_t>(sh) * stride(gate_k(l));
  }
  __host__ __device__ static int64_t align16(int64_t bytes) { return (bytes + 15) / 16 * 16; }
  __host__ __device__ int64_t t_start(int64_t a_size) const { return align16(a_elems * a_size); }
  __host__ __device__ int64_t bytes(int64_t a_size, int64_t t_size, bool resident) const {
    return t_start(a_size) + (resident ? t_elems * t_size : 0);
  }
};

// Output-major copies of the horizontal and head weights (a device table): per layer the gate
// weight (2h, K) and the output weight (h, h), then w1 (h, h) and w2 (C * L, h); folded, the gate
// weights of layers 1.. are fold_gate_kernel's and the fold biases (layers, 2h) follow w2.
enum TransposedWeight { kTGate, kTOut };
constexpr int kTPerLayer = 2;

// Layer l >= 1's gate product with layer l - 1's output product folded in. The gate input's
// current column is layer l - 1's output u = gated' OutW' + b' + u' (u': layer l - 2's output, the
// residual; none for l = 1), so with C = the rows of HW (kw h, 2h) that multiply the current
// column, u C = gated' (OutW' C) + u' C + b' C: the current column's term follows from gated'
// and u' directly, and the barrier between the two products goes. Writes the output-major gate
// weight ext (2h, (kw + 1) h) = [prev columns of HW, C, OutW' C] transposed, for the input
// [kw - 1 previous columns, u', gated'], and fold_bias (2h) = b' C. One thread per value, sums in
// A over m in order.
template <typename T>
__global__ void fold_gate_kernel(const T* __restrict__ hw, const T* __restrict__ out_w_prev,
                                 const T* __restrict__ out_b_prev, T* __restrict__ ext,
                                 T* __restrict__ fold_bias, int kw, int hidden) {
  using A = at::opmath_type<T>;
  const int h2 = 2 * hidden, kx = (kw + 1) * hidden;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= static_cast<int64_t>(h2) * (kx + 1)) return;
  const int o = static_cast<int>(idx / (kx + 1)), q = static_cast<int>(idx % (kx + 1));
  const T* cur = hw + static_cast<int64_t>(kw - 1) * hidden * h2;  // C: (h, 2h)
  if (q < kw * hidden) {
    ext[static_cast<int64_t>(o) * kx + q] = hw[static_cast<int64_t>(q) * h2 + o];
    return;
  }
  const bool bias = q == kx;
  const T* by = bias ? out_b_prev : out_w_prev + static_cast<int64_t>(q - kw * hidden) * hidden;
  A sum = A(0);
  for (int m = 0; m < hidden; ++m) sum += static_cast<A>(by[m]) * static_cast<A>(cur[static_cast<int64_t>(m) * h2 + o]);
  if (bias) {
    fold_bias[o] = static_cast<T>(sum);
  } else {
    ext[static_cast<int64_t>(o) * kx + q] = static_cast<T>(sum);
  }
}

// out[r][s] = this lane's share of sum_q x[s * ldx + q] * w[r][q] over q < k, for the S samples
// and R weight rows: lanes split q (reduce_items adds the shares). Each lane issues a chunk of
// kDotChunk loads per row before its first use: weight rows streamed from L2 then cost one round
// trip per 32 x kDotChunk values of K (rgb32's 528) instead of one per 4 x 32 (the H200 run of
// 2026-11-27: ~2.9 us per product streamed against ~1.4 resident). Each lane sums its q in order.
template <typename A, int R>
constexpr int dot_chunk() {  // registers: kDotChunk x R loads in flight, 32 floats or 16 doubles
  constexpr int chunk = (sizeof(A) > 4 ? 16 : 32) / R;
  return chunk > 16 ? 16 : (chunk < 4 ? 4 : chunk);
}

template <int S, int R, typename T, typename A>
__device__ __forceinline__ void lane_dots(const A* x, int ldx, const T* const (&w)[R], int k,
                                          A (&out)[R][S]) {
  constexpr int kDotChunk = dot_chunk<A, R>();
  const int lane = threadIdx.x & 31;
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int s = 0; s < S; ++s) out[r][s] = A(0);
  for (int q0 = lane; q0 < k; q0 += 32 * kDotChunk) {
    A wq[kDotChunk][R];
#pragma unroll
    for (int u = 0; u < kDotChunk; ++u) {
      const int q = q0 + 32 * u;
#pragma unroll
      for (int r = 0; r < R; ++r) wq[u][r] = q < k ? static_cast<A>(w[r][q]) : A(0);
    }
#pragma unroll
    for (int u = 0; u < kDotChunk; ++u) {
      const int q = q0 + 32 * u;
      if (q < k) {
#pragma unroll
        for (int s = 0; s < S; ++s) {
          const A xv = x[s * ldx + q];
#pragma unroll
          for (int r = 0; r < R; ++r) out[r][s] += xv * wq[u][r];
        }
      }
    }
  }
}

// Adds the warp's shares of N items of P values each (N a power of two). While a lane holds more
// than one item, each exchange halves them: the lane keeps one half, sends the other to its
// partner and adds the partner's share of the half it kept, so N items cost about N P shuffles
// where a butterfly on every value costs 5 N P (groups of 16 samples: 32 against 160 per pair of
// rows). Once one item is left the remaining exchanges are a butterfly (a + b == b + a, so the
// lanes sharing an item hold bitwise equal sums). Afterwards v[j] holds item lane * N / 32 + j
// (N >= 32), or item lane / (32 / N) (N < 32).
template <int N, int P, typename A, int n = N, int bit = 4>
__device__ __forceinline__ void reduce_items(A (&v)[N][P], int lane) {
  if constexpr (bit >= 0) {
    const int mask = 1 << bit;
    if constexpr (n > 1) {
      constexpr int half = n / 2;
      const bool upper = lane & mask;
#pragma unroll
      for (int i = 0; i < half; ++i)
#pragma unroll
        for (int p = 0; p < P; ++p) {
          const A send = upper ? v[i][p] : v[i + half][p];
          const A keep = upper ? v[i + half][p] : v[i][p];
          v[i][p] = keep + __shfl_xor_sync(0xffffffffu, send, mask);
        }
      reduce_items<N, P, A, half, bit - 1>(v, lane);
    } else {
#pragma unroll
      for (int p = 0; p < P; ++p) v[0][p] += __shfl_xor_sync(0xffffffffu, v[0][p], mask);
      reduce_items<N, P, A, 1, bit - 1>(v, lane);
    }
  }
}

// fn.template operator()<U>(i) for this warp's units of a product, i, i + kClusterWarps, ... below
// n, two at a time (U = 2: units i and i + kClusterWarps) while two are left, so that their
// rows' loads and reductions overlap: a slice wider than the block's warps (rgb32's 9 hidden units
// over 8 warps, 32 logit rows) took one unit's latency per unit in turn.
template <typename Fn>
__device__ __forceinline__ void for_warp_units(int n, int warp, Fn&& fn) {
  int i = warp;
  for (; i + kClusterWarps < n; i += 2 * kClusterWarps) fn.template operator()<2>(i);
  if (i < n) fn.template operator()<1>(i);
}

// A product of P weight rows per unit (a gate pair: P = 2): for this warp's units i < n
// (for_warp_units), the value epilogue(i, s, sums) of each sample s, sums[p] = x[s] . row_of(i, p)
// (x[s]: the k values from x + s * ldx),
// goes to dst_of(i)[s * ld] in every block of the cluster (dst_of gives this block's address; the
// layouts are equal). Each lane computes the epilogues of the items reduce_items left it, and the
// lanes sharing an item split its stores over the blocks. (The cluster's type is a template
// parameter here and below: a build for sm_80, which has no cluster_group, then still parses them.)
template <int S, int P, typename T, typename A, typename RowOf, typename Epilogue, typename DstOf, typename Cluster>
__device__ __forceinline__ void warp_products(Cluster& cluster, int n, int warp,
                                              const A* x, int ldx, int k, RowOf&& row_of,
                                              Epilogue&& epilogue, DstOf&& dst_of, int ld) {
  const int lane = threadIdx.x & 31, blocks = static_cast<int>(cluster.num_blocks());
  for_warp_units(n, warp, [&]<int U>(int i0) {
    constexpr int R = U * P, N = U * S;
    const T* w[R];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int p = 0; p < P; ++p) w[u * P + p] = row_of(i0 + u * kClusterWarps, p);
    A sums[R][S];
    lane_dots<S, R>(x, ldx, w, k, sums);
    A items[N][P];  // item u * S + s: unit u, sample s
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int s = 0; s < S; ++s)
#pragma unroll
        for (int p = 0; p < P; ++p) items[u * S + s][p] = sums[u * P + p][s];
    reduce_items<N, P>(items, lane);
    constexpr int kOwned = N >= 32 ? N / 32 : 1, kSharers = N >= 32 ? 1 : 32 / N;
    const int first = N >= 32 ? lane * kOwned : lane / kSharers;
#pragma unroll
    for (int j = 0; j < kOwned; ++j) {
      const int item = first + j, s = item % S, i = i0 + (item / S) * kClusterWarps;
      const A value = epilogue(i, s, items[j]);
      A* dst = dst_of(i) + s * ld;
      for (int rank = lane % kSharers; rank < blocks; rank += kSharers) *cluster.map_shared_rank(dst, rank) = value;
    }
  });
}

// Asks L1 for the lines of [begin, begin + n) (elements) without waiting for them: the weight rows
// of a streamed product, issued before the cluster barrier ahead of it, so that its loads find them
// on chip instead of taking an L2 round trip after the barrier (the barrier's wait covers it).
template <typename T>
__device__ __forceinline__ void prefetch_l1(const T* begin, int64_t n) {
#if defined(__CUDA_ARCH__)
  constexpr int64_t kLine = 128 / sizeof(T);
  for (int64_t e = threadIdx.x * kLine; e < n; e += kClusterThreads * kLine) {
    asm volatile("prefetch.global.L1 [%0];" ::"l"(begin + e));
  }
#endif
}

// x rounded to TF32 (cvt.rna: to nearest, ties away from zero), the low 13 bits cleared so that
// the bits read back as that float. The emulation (scripts/emulate_cuda/shim.h) brings its own
// stand-ins for this and mma_tf32; nvcc's host pass compiles neither into anything it calls.
__device__ __forceinline__ uint32_t tf32_bits(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t bits;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(bits) : "f"(x));
  return bits & 0xffffe000u;
#elif defined(PYGEN_EMULATED_CUDA)
  return emu::tf32_bits(x);
#else
  return 0;
#endif
}

// d += a b over one m16n8k8 tile of TF32 operands with float32 sums (mma.sync, sm_80+). The
// fragments as the PTX ISA lays them out, lane = 4 g + t: A (g, t), (g + 8, t), (g, t + 4),
// (g + 8, t + 4); B (t, g), (t + 4, g); D (g, 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
__device__ __forceinline__ void mma_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(PYGEN_EMULATED_CUDA)
  emu::mma_m16n8k8_tf32(d, a, b);
#endif
}

// d += a b over one m16n8k16 tile of 16-bit operands (T: c10::Half or c10::BFloat16) with float32
// sums (mma.sync, sm_80+). A register holds two values, the lower k in its low half; lane =
// 4 g + t: A (g, 2t..2t+1), (g + 8, 2t..), (g, 2t + 8..2t + 9), (g + 8, 2t + 8..); B (2t..2t+1, g),
// (2t + 8..2t + 9, g); D as m16n8k8's.
template <typename T>
__device__ __forceinline__ void mma_16bit(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#elif defined(PYGEN_EMULATED_CUDA)
  emu::mma_m16n8k16<T>(d, a, b);
#endif
}

// The k values one mma_products step covers: m16n8k8 for float32 weights, m16n8k16 for 16-bit.
template <typename T>
constexpr int kTileK = std::is_same_v<T, float> ? 8 : 16;

// One k-step of a tile: d += x (16 rows, ldx apart) times w (this lane's weight row, column g;
// null: zeros) over k values [8 step, + 8), to about float32 accuracy from three TF32 products:
// each operand is its TF32 rounding plus the TF32 rounding of the rest (22 significant bits in
// all), and the product of the two rests (~2^-22 relative) is left out. Each product has its own
// sums, d[0] and d[1] the small terms, d[2] the large: three independent chains of mma instead of
// one three times as long. The tile's k = t stands for the step's value 2t and t + 4 for 2t + 1,
// so that a lane loads its two values of a row as one 8-byte access (the order of K inside a
// tile is free as long as A and B agree).
__device__ __forceinline__ void tile_step(float (&d)[3][4], const float* x, int ldx, const float* w, int step,
                                          int g, int t) {
  using Pair = Vec<float, 2>;
  const int q = step * 8 + 2 * t;
  const Pair top = *reinterpret_cast<const Pair*>(x + g * ldx + q);
  const Pair bottom = *reinterpret_cast<const Pair*>(x + (g + 8) * ldx + q);
  const Pair wq = w != nullptr ? *reinterpret_cast<const Pair*>(w + q) : Pair{};
  const float a[4] = {top.v[0], bottom.v[0], top.v[1], bottom.v[1]};
  const float b[2] = {wq.v[0], wq.v[1]};
  uint32_t a_big[4], a_small[4], b_big[2], b_small[2];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    a_big[i] = tf32_bits(a[i]);
    a_small[i] = tf32_bits(a[i] - bits_to_float(a_big[i]));
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    b_big[i] = tf32_bits(b[i]);
    b_small[i] = tf32_bits(b[i] - bits_to_float(b_big[i]));
  }
  mma_tf32(d[0], a_small, b_big);
  mma_tf32(d[1], a_big, b_small);
  mma_tf32(d[2], a_big, b_big);
}

// The same over k values [16 step, + 16) for 16-bit weights (T), one product into d[2]: the
// float32 activations are rounded to T at the tile's input, as the 16-bit sampler keeps its
// activations between kernels (emulated: the logits as far from the float32 forward pass as with
// the warps' products; a second product for the rounding's rest changed nothing measurable). A
// lane's values of a row lie in two pairs (2t and 2t + 8), its weights in two 4-byte words.
template <typename T>
__device__ __forceinline__ void tile_step(float (&d)[3][4], const float* x, int ldx, const T* w, int step, int g,
                                          int t) {
  using Pair = Vec<float, 2>;
  const int q = step * 16 + 2 * t;
  const Pair pairs[4] = {*reinterpret_cast<const Pair*>(x + g * ldx + q),
                         *reinterpret_cast<const Pair*>(x + (g + 8) * ldx + q),
                         *reinterpret_cast<const Pair*>(x + g * ldx + q + 8),
                         *reinterpret_cast<const Pair*>(x + (g + 8) * ldx + q + 8)};
  const uint32_t b[2] = {w != nullptr ? *reinterpret_cast<const uint32_t*>(w + q) : 0u,
                         w != nullptr ? *reinterpret_cast<const uint32_t*>(w + q + 8) : 0u};
  uint32_t a[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const T lo = static_cast<T>(pairs[i].v[0]), hi = static_cast<T>(pairs[i].v[1]);
    a[i] = static_cast<uint32_t>(lo.x) | static_cast<uint32_t>(hi.x) << 16;
  }
  mma_16bit<T>(d[2], a, b);
}

// warp_products on tensor cores, for groups of 16 samples and K a multiple of kTileK<T>
// (PYGEN_PIXELCNN_TENSOR_CORES=1): the block's product x (16 x k, rows ldx apart, strides even:
// ClusterLayout::stride) times its P x n weight rows as mma tiles (tile_step), 8 rows a tile
// (rows past n read as zero). A warp takes a work item, one column tile over a 1/splits share of
// K, with splits enough to give every warp one; its sums go to `tiles` (ClusterLayout), and then
// each thread adds one item's shares in order, computes its epilogue (once per block it goes to:
// cheap beside the stores) and stores it into that block. Begins with a block barrier: the last
// product's epilogue may still read `tiles`.
template <int P, typename T, typename RowOf, typename Epilogue, typename DstOf, typename Cluster>
__device__ __forceinline__ void mma_products(Cluster& cluster, int n, int warp,
                                             const float* x, int ldx, int k, RowOf&& row_of,
                                             Epilogue&& epilogue, DstOf&& dst_of, int ld, float* tiles) {
  const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int col_tiles = (n + 7) / 8, n_tiles = P * col_tiles, steps = k / kTileK<T>;
  const int splits = n_tiles > 0 ? max(1, kClusterWarps / n_tiles) : 0;
  __syncthreads();
  for (int item = warp; item < n_tiles * splits; item += kClusterWarps) {
    const int tile = item % n_tiles, split = item / n_tiles;
    const int col = (tile % col_tiles) * 8 + g;
    const T* w = col < n ? row_of(col, tile / col_tiles) : nullptr;
    float d[3][4] = {};  // tile_step's chains (16-bit: d[2] only)
#pragma unroll 4
    for (int step = split * steps / splits; step < (split + 1) * steps / splits; ++step) {
      tile_step(d, x, ldx, w, step, g, t);
    }
    float* out = tiles + static_cast<int64_t>(item) * kTileValues;  // row-major 16 x 8
    const int at[4] = {g * 8 + 2 * t, g * 8 + 2 * t + 1, (g + 8) * 8 + 2 * t, (g + 8) * 8 + 2 * t + 1};
#pragma unroll
    for (int i = 0; i < 4; ++i) out[at[i]] = (d[0][i] + d[1][i]) + d[2][i];
  }
  __syncthreads();
  const int items = kTileSamples * n, blocks = static_cast<int>(cluster.num_blocks());
  for (int e = threadIdx.x; e < items * blocks; e += kClusterThreads) {
    // Consecutive threads: consecutive units of one sample, into the same block.
    const int rank = e / items, s = (e % items) / n, i = e % n;
    float sums[P];
#pragma unroll
    for (int p = 0; p < P; ++p) {
      sums[p] = 0.f;
      const int tile = p * col_tiles + i / 8;
      for (int split = 0; split < splits; ++split) {
        sums[p] += tiles[static_cast<int64_t>(split * n_tiles + tile) * kTileValues + s * 8 + i % 8];
      }
    }
    *cluster.map_shared_rank(dst_of(i) + s * ld, rank) = epilogue(i, s, sums);
  }
}

// One product of the cluster kernel: on tensor cores where the plan asks for them (groups of 16
// samples, float32 or 16-bit weights) and K is a multiple of kTileK<T>, else by warps.
template <int S, int P, typename T, typename A, typename RowOf, typename Epilogue, typename DstOf, typename Cluster>
__device__ __forceinline__ void product(bool tensor_cores, A* tiles, Cluster& cluster,
                                        int n, int warp, const A* x, int ldx, int k, RowOf&& row_of,
                                        Epilogue&& epilogue, DstOf&& dst_of, int ld) {
  if constexpr (S == kTileSamples && std::is_same_v<A, float>) {
    if (tensor_cores && k % kTileK<T> == 0) {
      mma_products<P, T>(cluster, n, warp, x, ldx, k, row_of, epilogue, dst_of, ld, tiles);
      return;
    }
  }
  warp_products<S, P, T>(cluster, n, warp, x, ldx, k, row_of, epilogue, dst_of, ld);
}

// Every value of image row p.row for samples [group * S, + S), group = blockIdx.x / N. Each value
// runs as steps that end with a cluster barrier: unfolded, step 2l is layer l's gate product and
// step 2l + 1 its output product; folded, step l runs layer l - 1's output product and layer l's
// folded gate product side by side (layers + 1 steps); then the head's two products.
template <typename T, int S>
__global__ void __launch_bounds__(kClusterThreads, 1)
    cluster_row_kernel(RowArgs<T> p, const T* const* wt_t, bool resident, bool folded, bool tensor_cores) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  using A = at::opmath_type<T>;
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  const int blocks = static_cast<int>(cluster.num_blocks()), rank = static_cast<int>(cluster.block_rank());
  const int h = p.hidden, h2 = 2 * h, kw = p.ring_width, pad = kw - 1, levels = p.levels;
  const ClusterLayout lay(p.layers, S, kw, h, p.channels, levels, blocks, folded, tensor_cores);
  const int hm = lay.hm, sh = lay.sh, sl = lay.sl, hld = lay.hld;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  A* smem = reinterpret_cast<A*>(smem_raw);
  A* ring = smem + lay.ring;
  A* window = smem + lay.window;
  A* gated = smem + lay.gated;
  A* top = smem + lay.top;
  A* hid = smem + lay.hid;
  A* logit = smem + lay.logit;
  A* gate_bias = smem + lay.gate_bias;
  A* out_b = smem + lay.out_b;
  A* b1 = smem + lay.b1;
  A* b2 = smem + lay.b2;
  A* tiles = smem + lay.tiles;
  T* rows = reinterpret_cast<T*>(smem_raw + lay.t_start(sizeof(A)));
  // This block's slices: hidden units (gate pairs and outputs) [o0, o0 + nh), levels [v0, + nl).
  const int o0 = min(h, rank * sh), nh = min(h, o0 + sh) - o0;
  const int v0 = min(levels, rank * sl), nl = min(levels, v0 + sl) - v0;
  const int t = threadIdx.x, warp = t >> 5;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x / blocks) * S;
  const int n_here = static_cast<int>(min(static_cast<int64_t>(S), p.batch - b0));
  const uint64_t seed = p.noise == nullptr ? static_cast<uint64_t>(*p.seed) : 0;
  const int64_t n_pix = static_cast<int64_t>(p.batch) * p.width;
  const T* const* wt = p.weights;
  const T* head_w1 = wt_t[p.layers * kTPerLayer];
  const T* head_w2 = wt_t[p.layers * kTPerLayer + 1];
  const T* fold_bias = folded ? wt_t[p.layers * kTPerLayer + 2] : nullptr;
  // Row `g` (of length k) of an output-major weight, or its copy at `local` in shared memory.
  auto row = [&](const T* global, int64_t g, int64_t local, int k) -> const T* {
    return resident ? rows + local : global + g * k;
  };
  // Each value runs `steps` steps; step s runs the gate product of layer gate_layer(s) and the
  // output product of layer out_layer(s) (-1: none).
  const int steps = folded ? p.layers + 1 : 2 * p.layers;
  auto gate_layer = [&](int step) { return folded ? (step < p.layers ? step : -1) : (step % 2 == 0 ? step / 2 : -1); };
  auto out_layer = [&](int step) { return folded ? step - 1 : (step % 2 == 1 ? step / 2 : -1); };
  // Streamed weights: this block's rows of step s's products, asked for ahead (prefetch_l1).
  auto prefetch_step = [&](int step) {
    if (resident) return;
    if (const int l = gate_layer(step); l >= 0) {
      const T* gate_w = wt_t[l * kTPerLayer + kTGate];
      const int k = lay.gate_k(l);
      prefetch_l1(gate_w + static_cast<int64_t>(o0) * k, static_cast<int64_t>(nh) * k);
      prefetch_l1(gate_w + static_cast<int64_t>(h + o0) * k, static_cast<int64_t>(nh) * k);
    }
    if (const int l = out_layer(step); l >= 0) {
      prefetch_l1(wt_t[l * kTPerLayer + kTOut] + static_cast<int64_t>(o0) * h, static_cast<int64_t>(nh) * h);
    }
  };

  // Launch: zero the rings, stage the constant biases and (resident) the weight rows.
  for (int64_t e = t; e < lay.window - lay.ring; e += kClusterThreads) ring[e] = 0;  // the rings
  for (int e = t; e < p.layers * nh; e += kClusterThreads) {
    const int l = e / nh, i = e % nh;
    out_b[l * sh + i] = static_cast<A>(wt[l * kPerLayer + kOutB][o0 + i]);
  }
  for (int i = t; i < nh; i += kClusterThreads) {
    b1[i] = static_cast<A>(wt[p.layers * kPerLayer + kB1][o0 + i]);
  }
  for (int e = t; e < p.channels * nl; e += kClusterThreads) {
    const int c = e / nl, i = e % nl;
    b2[c * sl + i] = static_cast<A>(wt[p.layers * kPerLayer + kB2][c * levels + v0 + i]);
  }
  if (resident) {
    // n rows of k values, k apart in global memory and lay.stride(k) here (a flat copy without
    // tensor cores).
    auto copy = [&](T* dst, const T* src, int n, int k) {
      const int ld = lay.stride(k);
      for (int e = t; e < n * k; e += kClusterThreads) dst[ld == k ? e : e / k * ld + e % k] = src[e];
    };
    for (int l = 0; l < p.layers; ++l) {
      const int k = lay.gate_k(l);
      T* dst = rows + lay.layer(l);
      copy(dst, wt_t[l * kTPerLayer + kTGate] + static_cast<int64_t>(o0) * k, nh, k);
      copy(dst + static_cast<int64_t>(sh) * lay.stride(k),
           wt_t[l * kTPerLayer + kTGate] + static_cast<int64_t>(h + o0) * k, nh, k);
      copy(rows + lay.out_rows(l), wt_t[l * kTPerLayer + kTOut] + static_cast<int64_t>(o0) * h, nh, h);
    }
    copy(rows + lay.w1, head_w1 + static_cast<int64_t>(o0) * h, nh, h);
    for (int c = 0; c < p.channels; ++c) {
      copy(rows + lay.w2 + static_cast<int64_t>(c) * sl * hld, head_w2 + (static_cast<int64_t>(c) * levels + v0) * h,
           nl, h);
    }
  }
  // No block may receive another's stores before it has zeroed its rings.
  cluster.sync();

  for (int j = 0; j < p.width; ++j) {
    const int cur = j % kw;
    for (int c = 0; c < p.channels; ++c) {
      if (c == 0) {
        // Layer 0's current column: values of later channels read as zero.
        for (int e = t; e < S * p.channels; e += kClusterThreads)
          ring[((e / p.channels) * kw + cur) * hm + e % p.channels] = 0;
        // Each gate pair's biases of this column: h_b (per sample) + the vertical stack's link.
        for (int e = t; e < p.layers * S * nh; e += kClusterThreads) {
          const int l = e / (S * nh), s = (e / nh) % S, i = e % nh;
          const int64_t b = min(b0 + s, static_cast<int64_t>(p.batch) - 1);
          const T* hb = wt[l * kPerLayer + kHB] + b * h2;
          const T* link = p.link + (l * n_pix + b * p.width + j) * h2;
          A* gb = gate_bias + (static_cast<int64_t>(l) * S + s) * 2 * sh;
          gb[i] = static_cast<A>(hb[o0 + i]) + static_cast<A>(link[o0 + i]);
          gb[sh + i] = static_cast<A>(hb[h + o0 + i]) + static_cast<A>(link[h + o0 + i]);
          if (folded && l > 0) {
            gb[i] += static_cast<A>(fold_bias[l * h2 + o0 + i]);
            gb[sh + i] += static_cast<A>(fold_bias[l * h2 + h + o0 + i]);
          }
        }
        __syncthreads();
      }
      for (int step = 0; step < steps; ++step) {
        const int lg = gate_layer(step), lo = out_layer(step);
        const bool fold = folded && lg > 0;
        const int cin = lg == 0 ? p.channels : h, k = lay.gate_k(lg);
        if (lg >= 0) {
          // The gate input: kw columns (s, dj, ci), column j - pad + dj of the layer's ring; folded,
          // its kw - 1 previous columns, then layer lg - 2's output (the residual of layer lg - 1;
          // none for lg = 1) and layer lg - 1's gated units (fold_gate_kernel).
          const A* ring_g = ring + static_cast<int64_t>(lg) * S * kw * hm;
          const A* residual = ring + static_cast<int64_t>(lg - 1) * S * kw * hm + cur * hm;
          const A* gated_in = gated + ((lg + 1) % 2) * S * hld;
          // A warp per column segment (s, dj), its lanes over ci: one division per segment.
          const int cols = k / cin;
          for (int sd = warp; sd < S * cols; sd += kClusterWarps) {
            const int s = sd / cols, dj = sd % cols, col = j - pad + dj;
            const A* src = nullptr;  // null: zeros
            if (!fold || dj < pad) {
              if (col >= 0) src = ring_g + (s * kw + col % kw) * hm;
            } else if (dj == pad) {
              if (lg > 1) src = residual + s * kw * hm;
            } else {
              src = gated_in + s * hld;
            }
            A* dst = window + s * lay.stride(k) + dj * cin;
            for (int ci = t & 31; ci < cin; ci += 32) dst[ci] = src != nullptr ? src[ci] : A(0);
          }
          __syncthreads();
        }
        if (lo >= 0) {
          // Layer lo's output at (i, j) goes to the next layer's ring (current column), the last
          // layer's to `top`; layers after the first add their input (residual connection).
          const bool last = lo + 1 == p.layers;
          const A* ring_o = ring + static_cast<int64_t>(lo) * S * kw * hm;
          A* next = last ? top : ring + static_cast<int64_t>(lo + 1) * S * kw * hm + cur * hm;
          const T* out_w = wt_t[lo * kTPerLayer + kTOut];
          product<S, 1, T>(
              tensor_cores, tiles, cluster, nh, warp, gated + (lo % 2) * S * hld, hld, h,
              [&](int i, int) { return row(out_w, o0 + i, lay.out_rows(lo) + static_cast<int64_t>(i) * hld, h); },
              [&](int i, int s, const A(&sum)[1]) {
                A v = sum[0] + out_b[lo * sh + i];
                if (lo > 0) v += ring_o[(s * kw + cur) * hm + o0 + i];
                return last ? relu(v) : v;  // the head starts with a ReLU
              },
              [&](int i) { return next + o0 + i; }, last ? hld : kw * hm);
        }
        if (lg >= 0) {
          // Unit i's gate pair: row p = 0 (a) and p = 1 (g).
          const int64_t lw = lay.layer(lg);
          const T* gate_w = wt_t[lg * kTPerLayer + kTGate];
          product<S, 2, T>(
              tensor_cores, tiles, cluster, nh, warp, window, lay.stride(k), k,
              [&](int i, int pair) {
                return row(gate_w, pair * h + o0 + i, lw + static_cast<int64_t>(pair * sh + i) * lay.stride(k), k);
              },
              [&](int i, int s, const A(&sums)[2]) {
                const A* gb = gate_bias + (static_cast<int64_t>(lg) * S + s) * 2 * sh;
                return gate_value(sums[0] + gb[i], sums[1] + gb[sh + i]);
              },
              [&](int i) { return gated + (lg % 2) * S * hld + o0 + i; }, hld);
        }
        if (step + 1 < steps) {
          prefetch_step(step + 1);
        } else if (!resident) {
          prefetch_l1(head_w1 + static_cast<int64_t>(o0) * h, static_cast<int64_t>(nh) * h);
        }
        cluster.sync();
      }
      // Head: 1x1 -> ReLU -> 1x1, only the logits of channel c.
      product<S, 1, T>(
          tensor_cores, tiles, cluster, nh, warp, top, hld, h,
          [&](int i, int) { return row(head_w1, o0 + i, lay.w1 + static_cast<int64_t>(i) * hld, h); },
          [&](int i, int, const A(&sum)[1]) { return relu(sum[0] + b1[i]); },
          [&](int i) { return hid + o0 + i; }, hld);
      if (!resident) prefetch_l1(head_w2 + (static_cast<int64_t>(c) * levels + v0) * h, static_cast<int64_t>(nl) * h);
      cluster.sync();
      product<S, 1, T>(
          tensor_cores, tiles, cluster, nl, warp, hid, hld, h,
          [&](int i, int) {
            return row(head_w2, static_cast<int64_t>(c) * levels + v0 + i,
                       lay.w2 + (static_cast<int64_t>(c) * sl + i) * hld, h);
          },
          [&](int i, int, const A(&sum)[1]) { return sum[0] + b2[c * sl + i]; },
          [&](int i) { return logit + v0 + i; }, levels);
      prefetch_step(0);  // the next value's
      cluster.sync();
      // Every block draws (the same level); block 0 writes the outputs.
      for (int s = warp; s < n_here; s += kClusterWarps) {
        draw_value(p, logit + s * levels, b0 + s, c, j, seed, ring + (s * kw + cur) * hm + c, rank == 0);
      }
      // The stores into other blocks all precede the last cluster barrier, so a block may exit
      // once its own draws are done.
      __syncthreads();
    }
  }
#endif
}

// fn.template operator()<S>() for the plan's samples per group: 1 or 2 for every dtype, also 4 or
// 8 for float (the large-batch variants, built for the sampler's common dtype only) and 16 for
// float and the 16-bit types (the tensor cores' tiles).
template <typename T, typename Fn>
void with_cluster_samples(int64_t samples, Fn&& fn) {
  if constexpr (std::is_same_v<T, float>) {
    if (samples == 4) return fn.template operator()<4>();
    if (samples == 8) return fn.template operator()<8>();
  }
  if constexpr (!std::is_same_v<T, double>) {
    if (samples == kTileSamples) return fn.template operator()<kTileSamples>();
  }
  if (samples == 1) return fn.template operator()<1>();
  return fn.template operator()<2>();
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

// `clusters` clusters of plan.cluster blocks; attr must outlive the config.
cudaLaunchConfig_t cluster_config(const RowPlan& plan, int64_t clusters, cudaStream_t stream,
                                  cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(clusters * plan.cluster));
  config.blockDim = dim3(kClusterThreads);
  config.dynamicSmemBytes = static_cast<size_t>(plan.smem_bytes);
  config.stream = stream;
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = static_cast<unsigned>(plan.cluster);
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  config.attrs = attr;
  config.numAttrs = 1;
  return config;
}

template <typename T, int S>
void launch_cluster(const Problem& p, const RowPlan& plan, const RowArgs<T>& args,
                    const T* const* wt_t, cudaStream_t stream) {
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_config(plan, (p.batch + S - 1) / S, stream, &attr);
  C10_CUDA_CHECK(cudaLaunchKernelEx(&config, cluster_row_kernel<T, S>, args, wt_t, plan.resident, plan.folded,
                                    plan.tensor_cores));
}

template <typename T>
void run(const Problem& p, const RowPlan& plan, const std::vector<at::Tensor>& weights,
         const at::Tensor& noise, const at::Tensor& seed, const at::Tensor& given,
         const std::vector<uint8_t>& given_rows, at::Tensor& images, at::Tensor& logits) {
  const auto opts = weights[0].options();
  const int64_t bsz = p.batch, width = p.width, h = p.hidden, h2 = 2 * h, pad = p.kernel / 2;
  const int64_t kh = pad + 1, wv = width + 2 * pad, n_pix = bsz * width;
  const double scale = 2.0 / static_cast<double>(p.levels - 1);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  // One device table of pointers: the weights, then (cluster kernel) their output-major copies.
  std::vector<at::Tensor> transposed;
  if (plan.cluster > 1) {
    const at::Tensor fold_bias = plan.folded ? at::zeros({p.layers, h2}, opts) : at::Tensor();
    for (int64_t l = 0; l < p.layers; ++l) {
      at::Tensor gate = weights[l * kPerLayer + kHW].t().contiguous();
      if (plan.folded && l > 0) {
        gate = at::empty({h2, (kh + 1) * h}, opts);
        fold_gate_kernel<<<blocks_for(h2 * ((kh + 1) * h + 1)), kThreads, 0, stream>>>(
            weights[l * kPerLayer + kHW].const_data_ptr<T>(), weights[(l - 1) * kPerLayer + kOutW].const_data_ptr<T>(),
            weights[(l - 1) * kPerLayer + kOutB].const_data_ptr<T>(), gate.mutable_data_ptr<T>(),
            fold_bias[l].mutable_data_ptr<T>(), static_cast<int>(kh), static_cast<int>(h));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      transposed.push_back(gate);
      transposed.push_back(weights[l * kPerLayer + kOutW].t().contiguous());
    }
    transposed.push_back(weights[p.layers * kPerLayer + kW1].t().contiguous());
    transposed.push_back(weights[p.layers * kPerLayer + kW2].t().contiguous());
    if (plan.folded) transposed.push_back(fold_bias);
  }
  std::vector<int64_t> addresses;
  for (const auto& t : weights) addresses.push_back(reinterpret_cast<int64_t>(t.const_data_ptr<T>()));
  for (const auto& t : transposed) addresses.push_back(reinterpret_cast<int64_t>(t.const_data_ptr<T>()));
  const at::Tensor table =
      at::tensor(addresses, at::TensorOptions().dtype(at::kLong)).to(opts.device(), /*non_blocking=*/false);
  const T* const* wt_t = reinterpret_cast<const T* const*>(table.const_data_ptr<int64_t>()) + weights.size();

  // Vertical inputs: per layer a zero ring (B, W + 2 pad, kh, Cin) of the kh rows its kernel
  // reaches (ring_at), one contiguous channels-last (B, kh Cin, 1, W + 2 pad) convolution input
  // at every step. (A window of kh rows of a taller buffer has a batch stride that cuDNN's path
  // copies away first: a strided copy of every layer's rows at every step, ~1.5 ms at mnist28
  // b256 on an H200.) The kernel's rows follow the slots instead: at step i slot s holds the
  // window's row (s - i) mod kh, so each layer has kh channels-last (2h, kh Cin, 1, k) weights,
  // its (2h, kh, k, Cin) taps rolled by the phase i % kh along the rows.
  std::vector<at::Tensor> v_in;
  std::vector<std::vector<at::Tensor>> v_conv;  // [layer][phase]
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t cin = l == 0 ? p.channels : h;
    v_in.push_back(at::zeros({bsz, wv, kh, cin}, opts));
    const at::Tensor taps = weights[l * kPerLayer + kVW].t().contiguous().view({h2, kh, p.kernel, cin});
    std::vector<at::Tensor> phases;
    for (int64_t phase = 0; phase < kh; ++phase) {
      phases.push_back(at::roll(taps, {phase}, {1})
                           .permute({0, 2, 1, 3})
                           .contiguous()
                           .view({h2, 1, p.kernel, kh * cin})
                           .permute({0, 3, 1, 2}));
    }
    v_conv.push_back(std::move(phases));
  }
  at::Tensor link = at::empty({p.layers, n_pix, h2}, opts);

  RowArgs<T> args{reinterpret_cast<const T* const*>(table.const_data_ptr<int64_t>()),
                  link.const_data_ptr<T>(),
                  noise.defined() ? noise.const_data_ptr<T>() : nullptr,
                  seed.defined() ? seed.const_data_ptr<int64_t>() : nullptr,
                  given.defined() ? given.const_data_ptr<int64_t>() : nullptr,
                  images.mutable_data_ptr<int64_t>(),
                  p.return_logits ? logits.mutable_data_ptr<T>() : nullptr,
                  static_cast<int>(bsz), static_cast<int>(p.channels), static_cast<int>(p.height),
                  static_cast<int>(width), static_cast<int>(p.levels), static_cast<int>(h),
                  static_cast<int>(p.layers), 0, static_cast<int>(kh),
                  p.temperature, scale};

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
      const at::Tensor window = v_in[l].view({bsz, 1, wv, -1}).permute({0, 3, 1, 2});
      at::Tensor v_pre = at::conv2d(window, v_conv[l][i % kh]).permute({0, 2, 3, 1}).reshape({n_pix, h2});
      const bool last = l + 1 == p.layers;
      T* v_next = last ? nullptr : v_in[l + 1].mutable_data_ptr<T>();
      const T* v_b = weights[l * kPerLayer + kVB].const_data_ptr<T>();
      at::Tensor link_l = link.select(0, l);
      if (plan.fused_link) {
        const auto blocks = static_cast<unsigned>((n_pix + kLinkPixels - 1) / kLinkPixels);
        bias_gate_link_kernel<<<blocks, kThreads, link_smem_bytes(p, sizeof(at::opmath_type<T>)), stream>>>(
            v_pre.const_data_ptr<T>(), v_b, v_next, weights[l * kPerLayer + kLinkW].const_data_ptr<T>(),
            link_l.mutable_data_ptr<T>(), n_pix, static_cast<int>(width), static_cast<int>(h),
            static_cast<int>(pad), static_cast<int>(i + pad));
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        continue;
      }
      bias_gate_kernel<<<blocks_for(n_pix * h), kThreads, 0, stream>>>(
          v_pre.mutable_data_ptr<T>(), v_b, v_next, n_pix, static_cast<int>(width), static_cast<int>(h),
          static_cast<int>(pad), static_cast<int>(i + pad));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::mm_out(link_l, v_pre, weights[l * kPerLayer + kLinkW]);
    }
    if (given_rows[i] != 0) {  // nothing to draw: the row as given (pixelcnn.cpp)
      images.select(2, i).copy_(given.select(2, i));
      continue;
    }
    args.row = static_cast<int>(i);
    if (plan.cluster > 1) {
      with_cluster_samples<T>(plan.samples, [&]<int S>() { launch_cluster<T, S>(p, plan, args, wt_t, stream); });
      continue;
    }
    switch (plan.samples) {
      case 1: launch_row<T, 1>(p, args, plan.smem_bytes, stream); break;
      case 2: launch_row<T, 2>(p, args, plan.smem_bytes, stream); break;
      case 4: launch_row<T, 4>(p, args, plan.smem_bytes, stream); break;
      default: launch_row<T, 8>(p, args, plan.smem_bytes, stream); break;
    }
  }
}

// How many clusters of the plan's shape can be resident at once (0: it cannot launch), after
// setting the kernel's shared-memory and cluster-size attributes; *ptx: the compiled code's
// architecture (the kernel body exists for sm_90+ only).
template <typename T, int S>
int active_clusters(const RowPlan& plan, int* ptx) {
  auto kernel = cluster_row_kernel<T, S>;
  cudaFuncAttributes attributes;
  C10_CUDA_CHECK(cudaFuncGetAttributes(&attributes, kernel));
  *ptx = attributes.ptxVersion != 0 ? attributes.ptxVersion : attributes.binaryVersion;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(plan.smem_bytes)));
  if (plan.cluster > 8) {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  }
  cudaLaunchAttribute attr;
  const cudaLaunchConfig_t config = cluster_config(plan, 1, nullptr, &attr);
  int active = 0;
  if (cudaOccupancyMaxActiveClusters(&active, kernel, &config) != cudaSuccess) {
    (void)cudaGetLastError();  // a shape the device refuses: report it as none resident
    return 0;
  }
  return active;
}

// The size of the type the kernels compute in for weights like ref (float for 16-bit weights).
int64_t math_bytes(const at::Tensor& ref) { return ref.scalar_type() == at::kDouble ? 8 : 4; }

// The cluster kernel's plan for `blocks` blocks per cluster and `group` samples per cluster,
// folded or not, on tensor cores or not, its weight slices resident in shared memory when they fit (unless
// PYGEN_PIXELCNN_CLUSTER_RESIDENT=0), and how many such clusters the device runs at once (0: none,
// or more shared memory than a block may have); *ptx: the compiled code's architecture.
struct ClusterChoice {
  RowPlan plan;
  int active = 0, ptx = 0;
};

ClusterChoice plan_cluster(const Problem& p, const at::Tensor& ref, int64_t blocks, int64_t group,
                           bool folded, bool tensor_cores, int64_t smem_optin) {
  const int64_t elem = math_bytes(ref);
  const ClusterLayout lay(static_cast<int>(p.layers), static_cast<int>(group),
                          static_cast<int>(p.kernel / 2 + 1), static_cast<int>(p.hidden),
                          static_cast<int>(p.channels), static_cast<int>(p.levels),
                          static_cast<int>(blocks), folded, tensor_cores);
  const int64_t t_size = ref.element_size();
  ClusterChoice choice{RowPlan{group, lay.bytes(elem, t_size, true), smem_optin, blocks, true}};
  choice.plan.folded = folded;
  choice.plan.tensor_cores = tensor_cores;
  const char* resident = std::getenv("PYGEN_PIXELCNN_CLUSTER_RESIDENT");  // "0": for tuning runs
  if (choice.plan.smem_bytes > smem_optin || (resident != nullptr && std::string(resident) == "0")) {
    // Stream the weight rows from L2.
    choice.plan.resident = false;
    choice.plan.smem_bytes = lay.bytes(elem, t_size, false);
  }
  if (choice.plan.smem_bytes > smem_optin) return choice;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ref.scalar_type(), "pixelcnn_cluster_plan", [&] {
    with_cluster_samples<scalar_t>(group, [&]<int S>() {
      choice.active = active_clusters<scalar_t, S>(choice.plan, &choice.ptx);
    });
  });
  return choice;
}

// Without PYGEN_PIXELCNN_CLUSTER: the cluster kernel when all of its clusters run at once, in
// float32 and float64 (the dtypes validated on a GPU so far), else the block kernel. Measured on
// an H200 (benchmarks/NOTES.md, 2026-11-27): 8 blocks with resident weights 24.1 ms against the
// block kernel's 34.3 at mnist28 b1, 28.8 against 36.1 at b16; weights too large to stay
// resident are spread over 16 blocks, 314 against 446 ms at rgb32 b1; at b256 (many waves of
// clusters) the block kernel wins, 51.5 against 124 ms.
RowPlan auto_plan(const Problem& p, const at::Tensor& ref, const RowPlan& block_plan, bool folded, int device) {
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  const bool validated = ref.scalar_type() == at::kFloat || ref.scalar_type() == at::kDouble;
  if (major < 9 || !validated) return block_plan;  // clusters of blocks need sm_90
  const int64_t group = p.batch > 1 ? 2 : 1, groups = (p.batch + group - 1) / group;
  ClusterChoice choice = plan_cluster(p, ref, 8, group, folded, false, block_plan.smem_limit);
  if (!choice.plan.resident) choice = plan_cluster(p, ref, kMaxCluster, group, folded, false, block_plan.smem_limit);
  return choice.ptx >= 90 && choice.active >= groups ? choice.plan : block_plan;
}

RowPlan plan_row_kernels(const Problem& p, const at::Tensor& ref) {
  const int64_t elem = math_bytes(ref);
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
  const RowPlan block_plan{samples, row_smem_bytes(p, samples, elem), smem_optin};
  // The cluster kernel folded (PYGEN_PIXELCNN_FOLDED=1): opt-in until a GPU run has validated
  // and timed it (benchmarks/NOTES.md).
  const char* fold = std::getenv("PYGEN_PIXELCNN_FOLDED");
  const bool folded = fold != nullptr && std::string(fold) == "1";
  // The cluster kernel's products on tensor cores (PYGEN_PIXELCNN_TENSOR_CORES=1): opt-in, with
  // a forced shape of groups of 16, until a GPU run has validated and timed them.
  const char* tc = std::getenv("PYGEN_PIXELCNN_TENSOR_CORES");
  const bool tensor_cores = tc != nullptr && std::string(tc) == "1";
  // A cluster size forced through PYGEN_PIXELCNN_CLUSTER (1: the block kernel) for tuning runs
  // and tests; a setting that cannot run raises.
  const char* forced = std::getenv("PYGEN_PIXELCNN_CLUSTER");
  const char* needs = "PYGEN_PIXELCNN_TENSOR_CORES=1 needs the cluster kernel forced (PYGEN_PIXELCNN_CLUSTER "
                      "of 2 to 16 blocks) with groups of 16 samples (PYGEN_PIXELCNN_CLUSTER_SAMPLES=16)";
  TORCH_CHECK_VALUE(!tensor_cores || (forced != nullptr && std::atoll(forced) > 1), needs);
  if (forced == nullptr) return auto_plan(p, ref, block_plan, folded, device);
  const int64_t blocks = std::atoll(forced);
  if (blocks == 1) return block_plan;
  TORCH_CHECK_VALUE(blocks == 2 || blocks == 4 || blocks == 8 || blocks == kMaxCluster,
                    "PYGEN_PIXELCNN_CLUSTER must be 1, 2, 4, 8 or 16, got '", forced, "'");
  int64_t group = p.batch > 1 ? 2 : 1;
  if (const char* forced_samples = std::getenv("PYGEN_PIXELCNN_CLUSTER_SAMPLES")) {
    group = std::atoll(forced_samples);
    TORCH_CHECK_VALUE(group == 1 || group == 2 || group == 4 || group == 8 || group == 16,
                      "PYGEN_PIXELCNN_CLUSTER_SAMPLES must be 1, 2, 4, 8 or 16, got '", forced_samples, "'");
    const bool built = ref.scalar_type() == at::kFloat || (group == kTileSamples && ref.scalar_type() != at::kDouble);
    TORCH_CHECK_VALUE(group <= 2 || built, "PYGEN_PIXELCNN_CLUSTER_SAMPLES=", group,
                      group == kTileSamples ? " is built for float32, float16 and bfloat16 weights only"
                                            : " is built for float32 weights only");
  }
  TORCH_CHECK_VALUE(!tensor_cores || group == kTileSamples, needs);
  const ClusterChoice choice = plan_cluster(p, ref, blocks, group, folded, tensor_cores, smem_optin);
  TORCH_CHECK(choice.plan.smem_bytes <= smem_optin, "PYGEN_PIXELCNN_CLUSTER=", blocks, ": the cluster kernel ",
              "needs ", choice.plan.smem_bytes, " bytes of shared memory per block, more than this GPU's ",
              smem_optin);
  TORCH_CHECK(choice.ptx >= 90, "PYGEN_PIXELCNN_CLUSTER=", blocks, ": the cluster kernel needs a build for ",
              "sm_90 or newer (this one's code is for sm_", choice.ptx, ")");
  TORCH_CHECK(choice.active >= 1, "PYGEN_PIXELCNN_CLUSTER=", blocks, ": this GPU cannot run a cluster of ",
              blocks, " blocks with ", choice.plan.smem_bytes, " bytes of shared memory each");
  return choice.plan;
}

}  // namespace

RowPlan plan_cuda_rows(const Problem& p, const at::Tensor& ref) {
  const c10::cuda::CUDAGuard guard(ref.device());
  RowPlan plan = plan_row_kernels(p, ref);
  // The fused link kernel re-reads the link weights in every block: it wins while its blocks run
  // in one wave (H200, 2026-11-27: mnist28 b1 23.4 against 24.5 ms, b16 27.0 against 27.3) and
  // loses beyond (b256, 1792 blocks of 4 pixels: 54.4 against 51.8). PYGEN_PIXELCNN_FUSED_LINK=1 or
  // 0 forces it on or off; either way within the shared memory a block has without asking.
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, ref.get_device()));
  bool fused_link = (p.batch * p.width + kLinkPixels - 1) / kLinkPixels <= sms;
  if (const char* forced = std::getenv("PYGEN_PIXELCNN_FUSED_LINK")) fused_link = std::string(forced) == "1";
  plan.fused_link = fused_link && link_smem_bytes(p, math_bytes(ref)) <= 48 * 1024;
  return plan;
}

void sample_cuda(const Problem& p, const RowPlan& plan, const std::vector<at::Tensor>& weights,
                 const at::Tensor& noise, const at::Tensor& seed, const at::Tensor& given,
                 const std::vector<uint8_t>& given_rows, at::Tensor& images, at::Tensor& logits) {
  const c10::cuda::CUDAGuard guard(weights[0].device());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, weights[0].scalar_type(),
                                  "pixelcnn_sample_cuda", [&] {
                                    run<scalar_t>(p, plan, weights, noise, seed, given, given_rows,
                                                  images, logits);
                                  });
}

}  // namespace pygen::pixelcnn
