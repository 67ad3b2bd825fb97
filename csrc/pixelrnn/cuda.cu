// CUDA kernel of the cached PixelRNN sampler (algorithm: pixelrnn.h; cpu.cpp runs the same steps
// in the same order). One block per sample runs every value of its image in one launch: each
// product is spread over the block by output (a thread walks K down one column of the (in, out)
// weights, so a warp reads consecutive weights of each row), the value's vectors (u, gates, head,
// logits) live in shared memory, the rows of state in a zero-initialised global scratch of the
// sample's own, and one warp draws (common/cuda_draw.cuh). Barriers only, no atomics: a seed
// gives the same images on every run. 16-bit weights run as float32 (common/sampler.h).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <vector>

#include "common/cuda_draw.cuh"
#include "common/math.h"
#include "common/philox.h"
#include "common/sampler.h"
#include "pixelrnn/pixelrnn.h"

namespace pygen::pixelrnn {
namespace {

constexpr int kThreads = 128;

template <typename T>
struct Args {
  const T* const* w;  // device table of the flat weight list (pixelrnn.h)
  const T* noise;     // (B, C, H, W) uniforms, or null: Philox uniforms of *seed
  const int64_t* seed;
  const int64_t* given;  // (B, C, H, W) levels kept, -1 where drawn; or null: all drawn
  int64_t* images;  // (B, C, H, W)
  T* logits;        // (B, L, C, H, W) or null
  T* scratch;       // (B, scratch_per_sample), zeros
  int64_t scratch_per_sample;
  int channels, height, width, levels, hidden, kernel, row_kernel, layers;
  bool diagonal;
  double temperature;
};

template <typename T>
__device__ __forceinline__ T sigmoid(T x) {
  return T(1) / (T(1) + fast_exp(-x));
}

// y[r * ldy + o] += sum_q x[r * ldx + q] * w[q * ldw + o] for r < rows, o < n (cpu.cpp's
// matmul_acc): a thread per (r, o). Ends with a barrier.
template <typename T>
__device__ void products(const T* x, int64_t ldx, const T* __restrict__ w, int ldw, int k, int n,
                         T* y, int64_t ldy, int rows) {
  for (int e = threadIdx.x; e < rows * n; e += kThreads) {
    const int r = e / n, o = e % n;
    const T* xr = x + r * ldx;
    T acc = y[r * ldy + o];
    for (int q = 0; q < k; ++q) acc += xr[q] * w[static_cast<int64_t>(q) * ldw + o];
    y[r * ldy + o] = acc;
  }
  __syncthreads();
}

// y[r * ldy + o] = a[o] (+ b[o] (+ c[o])) for r < rows, o < n. Ends with a barrier.
template <typename T>
__device__ void fill(T* y, int64_t ldy, int rows, int n, const T* a, const T* b = nullptr,
                     const T* c = nullptr) {
  for (int e = threadIdx.x; e < rows * n; e += kThreads) {
    const int r = e / n, o = e % n;
    T v = a[o];
    if (b != nullptr) v += b[o];
    if (c != nullptr) v += c[o];
    y[r * ldy + o] = v;
  }
  __syncthreads();
}

// One LSTM update (pygen.layers.lstm_cell): gate pre-activations `pre` (4h, laid out (groups,
// [i, f, o, g], h / groups)) and the cell `c` to the new `h_out` and `c_out`. Ends with a barrier.
template <typename T>
__device__ void lstm_cell(const T* pre, const T* c, int h, int groups, T* h_out, T* c_out) {
  const int size = h / groups;
  for (int o = threadIdx.x; o < h; o += kThreads) {
    const T* gate = pre + (o / size) * 4 * size;
    const int s = o % size;
    const T cell = sigmoid(gate[size + s]) * c[o] + sigmoid(gate[s]) * fast_tanh(gate[3 * size + s]);
    c_out[o] = cell;
    h_out[o] = sigmoid(gate[2 * size + s]) * fast_tanh(cell);
  }
  __syncthreads();
}

// Raw views of one direction's weights ((in, out) matrices, 4h gate columns) and of a layer.
template <typename T>
struct Direction {
  const T *is_w, *is_b, *ss_w, *ss_b, *ex_w, *ex_b;
  __device__ Direction(const T* const* w, bool extra)
      : is_w(w[kIsW]), is_b(w[kIsB]), ss_w(w[kSsW]), ss_b(w[kSsB]),
        ex_w(extra ? w[kExW] : nullptr), ex_b(extra ? w[kExB] : nullptr) {}
};

// Every value of sample blockIdx.x. Shared memory: u, sum, top, hid (h each), pre (4h), logits.
template <typename T>
__global__ void __launch_bounds__(kThreads) sample_kernel(Args<T> p) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const int h = p.hidden, h4 = 4 * h, width = p.width, cc = p.channels, levels = p.levels;
  const int pad = p.kernel / 2, img_width = width + 2 * pad, row_len = p.kernel * cc;
  T* u = smem;
  T* sum = u + h;
  T* top = sum + h;
  T* hid = top + h;
  T* pre = hid + h;
  T* logit = pre + h4;
  const int64_t b = blockIdx.x;
  const int t = threadIdx.x;
  const uint64_t seed = p.noise == nullptr ? static_cast<uint64_t>(*p.seed) : 0;
  const int64_t plane = static_cast<int64_t>(cc) * p.height * width;
  const int per_layer = p.diagonal ? kDiagonalLayer : kRowLayer;
  const T* const* head = p.w + kInput + p.layers * per_layer;
  const T scale = static_cast<T>(2.0 / static_cast<double>(levels - 1));

  // The sample's scratch: the scaled image (H + k//2, W + 2 (k//2), C), zero-padded above and on
  // both sides, then per layer its rows of state (sizes: scratch_per_layer in the host code).
  T* img = p.scratch + b * p.scratch_per_sample;
  const int64_t img_size = static_cast<int64_t>(p.height + pad) * img_width * cc;
  auto img_at = [&](int i, int j) { return img + (static_cast<int64_t>(i) * img_width + j) * cc; };

  // u = the mask A input convolution at (i, j): one product per window row.
  auto input_features = [&](int i, int j) {
    fill(u, 0, 1, h, p.w[kInB]);
    for (int di = 0; di <= pad; ++di) {
      products(img_at(i + di, j), 0, p.w[kInW] + static_cast<int64_t>(di) * row_len * h, h, row_len,
               h, u, 0, 1);
    }
  };
  // u += out_b + x @ out_w: a layer's residual output.
  auto residual = [&](int l, const T* x) {
    const T* const* out = p.w + kInput + l * per_layer + per_layer - kOut;
    for (int o = t; o < h; o += kThreads) u[o] += out[1][o];
    __syncthreads();
    products(x, 0, out[0], h, h, h, u, 0, 1);
  };
  // The head on u (channel c's logits only), the draw of value (c, i, j), its scaled level
  // written into the image.
  auto head_and_draw = [&](int c, int i, int j) {
    for (int o = t; o < h; o += kThreads) top[o] = relu(u[o]);
    fill(hid, 0, 1, h, head[kB1]);
    products(top, 0, head[kW1], h, h, h, hid, 0, 1);
    for (int o = t; o < h; o += kThreads) hid[o] = relu(hid[o]);
    fill(logit, 0, 1, levels, head[kB2] + c * levels);
    products(hid, 0, head[kW2] + c * levels, cc * levels, h, levels, logit, 0, 1);
    if (t < 32) {
      const int64_t g = ((b * cc + c) * p.height + i) * width + j;
      const int level =
          warp_level(p.noise, seed, p.given, g, logit, levels, static_cast<T>(p.temperature));
      if (t == 0) {
        p.images[g] = level;
        img_at(i + pad, j + pad)[c] = static_cast<T>(level) * scale - T(1);
      }
      if (p.logits != nullptr) {  // logits (B, L, C, H, W)
        T* out = p.logits + b * levels * plane + (g - b * plane);
        for (int v = t; v < levels; v += 32) out[v * plane] = logit[v];
      }
    }
    __syncthreads();
  };

  T* state = img + img_size;
  if (!p.diagonal) {
    // Per layer: the row's inputs, zero-padded kw - 1 columns on the left; the hidden states of
    // the row above and of this row, zero-padded one column each side; the cells; the row
    // recurrence's pre-activations.
    const int kw = p.row_kernel, in_width = width + kw - 1, state_width = width + 2;
    const int64_t per = static_cast<int64_t>(in_width + 2 * state_width + 2 * width) * h + static_cast<int64_t>(width) * h4;
    for (int i = 0; i < p.height; ++i) {
      const bool odd = i % 2 == 1;  // the rows above and of this row swap roles every row
      for (int l = 0; l < p.layers; ++l) {
        T* s = state + l * per;
        const T* h_above = s + in_width * h + (odd ? state_width * h : 0);
        T* from_above = s + static_cast<int64_t>(in_width + 2 * state_width + 2 * width) * h;
        const Direction<T> d(p.w + kInput + l * per_layer, false);
        fill(from_above, h4, width, h4, d.is_b, d.ss_b);
        products(h_above, h, d.ss_w, h4, 3 * h, h4, from_above, h4, width);  // the 3 taps above
      }
      for (int j = 0; j < width; ++j) {
        for (int c = 0; c < cc; ++c) {
          input_features(i, j);
          for (int l = 0; l < p.layers; ++l) {
            T* s = state + l * per;
            T* inputs = s;
            T* h_row = s + in_width * h + (odd ? 0 : state_width * h);
            T* c_base = s + static_cast<int64_t>(in_width + 2 * state_width) * h;
            const T* c_above = c_base + (odd ? width * h : 0);
            T* c_row = c_base + (odd ? 0 : width * h);
            const T* from_above = c_base + 2 * width * h;
            const Direction<T> d(p.w + kInput + l * per_layer, false);
            for (int o = t; o < h; o += kThreads) inputs[(j + kw - 1) * h + o] = u[o];
            for (int o = t; o < h4; o += kThreads) pre[o] = from_above[j * h4 + o];
            __syncthreads();
            products(inputs + j * h, 0, d.is_w, h4, kw * h, h4, pre, 0, 1);
            T* h_new = h_row + (j + 1) * h;
            lstm_cell(pre, c_above + j * h, h, cc, h_new, c_row + j * h);
            residual(l, h_new);
          }
          head_and_draw(c, i, j);
        }
      }
    }
    return;
  }

  // Diagonal BiLSTM. Per layer: the row's inputs; the left-to-right states of the row above and
  // of this row, and the cells; the right-to-left direction's states of the row above (its
  // output, shifted down a row) and of this row, its cells and pre-activations along the row;
  // and each direction's states left of each row's first pixel (the recurrence on zero inputs,
  // the same for every image: cpu.cpp's boundary_states).
  // A layer's buffers: inputs, h (2 rows), c_row, the right-to-left h (2 rows), c_back (a row
  // each), then from_above and back_pre (W x 4h each), then the edges (2 directions x H x 2h).
  const int64_t row = static_cast<int64_t>(width) * h;
  const int64_t from_above_at = 7 * row, back_pre_at = from_above_at + static_cast<int64_t>(width) * h4;
  const int64_t edges_at = back_pre_at + static_cast<int64_t>(width) * h4;
  const int64_t per = edges_at + 2 * static_cast<int64_t>(p.height) * 2 * h;
  for (int l = 0; l < p.layers; ++l) {
    T* edges = state + l * per + edges_at;
    for (int dir = 0; dir < 2; ++dir) {
      const Direction<T> d(p.w + kInput + l * per_layer + dir * kDirection, dir == 1);
      T* states = edges + static_cast<int64_t>(dir) * p.height * 2 * h;
      for (int i = 1; i < p.height; ++i) {
        const T* prev = states + (i - 1) * 2 * h;
        fill(pre, 0, 1, h4, d.ss_b);
        products(prev, 0, d.ss_w, h4, h, h4, pre, 0, 1);           // the pixel above
        products(prev, 0, d.ss_w + h * h4, h4, h, h4, pre, 0, 1);  // the pixel to the left
        lstm_cell(pre, prev + h, h, cc, states + i * 2 * h, states + i * 2 * h + h);
      }
    }
  }
  for (int i = 0; i < p.height; ++i) {
    const bool odd = i % 2 == 1;
    for (int l = 0; l < p.layers; ++l) {
      T* s = state + l * per;
      const T* h_above = s + row + (odd ? row : 0);
      T* from_above = s + from_above_at;
      const Direction<T> d(p.w + kInput + l * per_layer, false);
      fill(from_above, h4, width, h4, d.is_b, d.ss_b);
      products(h_above, h, d.ss_w, h4, h, h4, from_above, h4, width);
    }
    for (int j = 0; j < width; ++j) {
      for (int c = 0; c < cc; ++c) {
        input_features(i, j);
        for (int l = 0; l < p.layers; ++l) {
          T* s = state + l * per;
          T* inputs = s;
          T* h_row = s + row + (odd ? 0 : row);
          T* c_row = s + 3 * row;
          const T* back_above = s + 4 * row + (odd ? row : 0);
          const T* from_above = s + from_above_at;
          const T* edge = s + edges_at + i * 2 * h;
          const Direction<T> d(p.w + kInput + l * per_layer, false);
          for (int o = t; o < h; o += kThreads) inputs[j * h + o] = u[o];
          for (int o = t; o < h4; o += kThreads) pre[o] = from_above[j * h4 + o];
          __syncthreads();
          products(u, 0, d.is_w, h4, h, h4, pre, 0, 1);
          // The pixel to the left: this row's column j - 1, or the boundary state.
          products(j > 0 ? h_row + (j - 1) * h : edge, 0, d.ss_w + h * h4, h4, h, h4, pre, 0, 1);
          lstm_cell(pre, j > 0 ? c_row + (j - 1) * h : edge + h, h, cc, h_row + j * h, c_row + j * h);
          for (int o = t; o < h; o += kThreads) sum[o] = h_row[j * h + o] + back_above[j * h + o];
          __syncthreads();
          residual(l, sum);
        }
        head_and_draw(c, i, j);
      }
    }
    // Row i is complete: the right-to-left direction runs along it, right to left, from its
    // inputs, the image row and its states of the row above.
    for (int l = 0; l < p.layers; ++l) {
      T* s = state + l * per;
      const T* inputs = s;
      const T* back_above = s + 4 * row + (odd ? row : 0);
      T* h_back = s + 4 * row + (odd ? 0 : row);
      T* c_back = s + 6 * row;
      T* back_pre = s + back_pre_at;
      const T* edge = s + edges_at + static_cast<int64_t>(p.height) * 2 * h + i * 2 * h;
      const Direction<T> d(p.w + kInput + l * per_layer + kDirection, true);
      fill(back_pre, h4, width, h4, d.is_b, d.ex_b, d.ss_b);
      products(inputs, h, d.is_w, h4, h, h4, back_pre, h4, width);
      products(img_at(i + pad, pad), cc, d.ex_w, h4, cc, h4, back_pre, h4, width);
      products(back_above, h, d.ss_w, h4, h, h4, back_pre, h4, width);
      for (int j = width - 1; j >= 0; --j) {
        const bool last = j == width - 1;
        T* bp = back_pre + static_cast<int64_t>(j) * h4;
        products(last ? edge : h_back + (j + 1) * h, 0, d.ss_w + h * h4, h4, h, h4, bp, 0, 1);
        lstm_cell(bp, last ? edge + h : c_back + (j + 1) * h, h, cc, h_back + j * h, c_back + j * h);
      }
    }
  }
}

// Scratch elements per sample: the padded image, then the layers' rows of state.
int64_t scratch_per_sample(const Problem& p) {
  const int64_t h = p.hidden, h4 = 4 * h, width = p.width, pad = p.kernel / 2;
  const int64_t img = (p.height + pad) * (width + 2 * pad) * p.channels;
  const int64_t per_layer =
      p.diagonal ? 7 * width * h + 2 * width * h4 + 2 * p.height * 2 * h
                 : (width + p.row_kernel - 1 + 2 * (width + 2) + 2 * width) * h + width * h4;
  return img + p.layers * per_layer;
}

template <typename T>
void run(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
         const at::Tensor& seed, const at::Tensor& given, at::Tensor& images,
         at::Tensor& logits) {
  const auto opts = weights[0].options();
  std::vector<int64_t> addresses;
  for (const auto& w : weights) addresses.push_back(reinterpret_cast<int64_t>(w.const_data_ptr<T>()));
  const at::Tensor table =
      at::tensor(addresses, at::TensorOptions().dtype(at::kLong)).to(opts.device(), /*non_blocking=*/false);
  const int64_t per_sample = scratch_per_sample(p);
  at::Tensor scratch = at::zeros({p.batch, per_sample}, opts);
  const Args<T> args{reinterpret_cast<const T* const*>(table.const_data_ptr<int64_t>()),
                     noise.defined() ? noise.const_data_ptr<T>() : nullptr,
                     seed.defined() ? seed.const_data_ptr<int64_t>() : nullptr,
                     given.defined() ? given.const_data_ptr<int64_t>() : nullptr,
                     images.mutable_data_ptr<int64_t>(),
                     p.return_logits ? logits.mutable_data_ptr<T>() : nullptr,
                     scratch.mutable_data_ptr<T>(), per_sample,
                     static_cast<int>(p.channels), static_cast<int>(p.height),
                     static_cast<int>(p.width), static_cast<int>(p.levels),
                     static_cast<int>(p.hidden), static_cast<int>(p.kernel),
                     static_cast<int>(p.row_kernel), static_cast<int>(p.layers), p.diagonal,
                     p.temperature};
  const int64_t smem = (8 * p.hidden + p.levels) * static_cast<int64_t>(sizeof(T));
  auto kernel = sample_kernel<T>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem)));
  kernel<<<static_cast<unsigned>(p.batch), kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(args);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace

void sample_cuda(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                 const at::Tensor& seed, const at::Tensor& given, at::Tensor& images,
                 at::Tensor& logits) {
  const c10::cuda::CUDAGuard guard(weights[0].device());
  dispatch_sampler(weights, noise, logits,
                   [&]<typename T>(const std::vector<at::Tensor>& w, const at::Tensor& u,
                                   at::Tensor& out) { run<T>(p, w, u, seed, given, images, out); });
}

}  // namespace pygen::pixelrnn
