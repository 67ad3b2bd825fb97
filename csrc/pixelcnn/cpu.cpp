// CPU kernel of the cached PixelCNN sampler (algorithm and layout: pixelcnn.h).
//
// Per image row: the vertical stack of every layer for the whole row and batch as one im2col +
// GEMM (at::mm, the BLAS), then its link projection (another GEMM). Then the batch is split over
// the threads (one parallel region per row), and each thread runs the row's pixels for its samples:
// per value, per layer, one output position from the current row's buffers, with hand-written
// small matrix products over its samples (weights reused across them), then the head, the softmax
// and the draw. The per-value code is compiled for AVX2+FMA too and picked at load time.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "common/math.h"
#include "common/philox.h"
#include "pixelcnn/pixelcnn.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define PYGEN_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define PYGEN_CLONES
#endif

namespace pygen::pixelcnn {
namespace {

// Raw views of the flat weight list.
template <typename T>
struct Net {
  std::vector<const T*> v_w, v_b, h_w, h_b, link_w, out_w, out_b;
  const T *w1, *b1, *w2, *b2;

  explicit Net(const std::vector<at::Tensor>& w, int64_t layers) {
    for (int64_t l = 0; l < layers; ++l) {
      const at::Tensor* lw = &w[l * kPerLayer];
      v_w.push_back(lw[kVW].const_data_ptr<T>());
      v_b.push_back(lw[kVB].const_data_ptr<T>());
      h_w.push_back(lw[kHW].const_data_ptr<T>());
      h_b.push_back(lw[kHB].const_data_ptr<T>());
      link_w.push_back(lw[kLinkW].const_data_ptr<T>());
      out_w.push_back(lw[kOutW].const_data_ptr<T>());
      out_b.push_back(lw[kOutB].const_data_ptr<T>());
    }
    const at::Tensor* hw = &w[layers * kPerLayer];
    w1 = hw[kW1].const_data_ptr<T>();
    b1 = hw[kB1].const_data_ptr<T>();
    w2 = hw[kW2].const_data_ptr<T>();
    b2 = hw[kB2].const_data_ptr<T>();
  }
};

// y[r, :n] += x[r, :k] @ w[:k, :n] for R rows (row strides ldx, ldw, ldy): a register tile of R
// rows x kTile outputs accumulates over k, so each weight row is loaded once for the R samples.
template <typename T, int64_t R>
inline __attribute__((always_inline)) void matmul_tile(const T* x, int64_t ldx, const T* w,
                                                       int64_t ldw, int64_t k, int64_t n, T* y,
                                                       int64_t ldy) {
  constexpr int64_t kTile = 64 / sizeof(T);  // two AVX2 registers per row
  int64_t o0 = 0;
  for (; o0 + kTile <= n; o0 += kTile) {
    T acc[R][kTile];
#pragma GCC unroll 4
    for (int64_t r = 0; r < R; ++r) {
#pragma omp simd
      for (int64_t o = 0; o < kTile; ++o) acc[r][o] = y[r * ldy + o0 + o];
    }
    for (int64_t q = 0; q < k; ++q) {
      const T* wq = w + q * ldw + o0;
#pragma GCC unroll 4
      for (int64_t r = 0; r < R; ++r) {
        const T xv = x[r * ldx + q];
#pragma omp simd
        for (int64_t o = 0; o < kTile; ++o) acc[r][o] += xv * wq[o];
      }
    }
#pragma GCC unroll 4
    for (int64_t r = 0; r < R; ++r) {
#pragma omp simd
      for (int64_t o = 0; o < kTile; ++o) y[r * ldy + o0 + o] = acc[r][o];
    }
  }
  for (int64_t r = 0; r < R; ++r) {  // the last n % kTile outputs
    for (int64_t q = 0; q < k; ++q) {
      const T xv = x[r * ldx + q];
      for (int64_t o = o0; o < n; ++o) y[r * ldy + o] += xv * w[q * ldw + o];
    }
  }
}

// y[r, :n] += x[r, :k] @ w[:k, :n] for r < rows, in tiles of 4 rows.
template <typename T>
inline __attribute__((always_inline)) void matmul_acc(const T* x, int64_t ldx, const T* w,
                                                      int64_t ldw, int64_t k, int64_t n, T* y,
                                                      int64_t ldy, int64_t rows) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4) matmul_tile<T, 4>(x + r * ldx, ldx, w, ldw, k, n, y + r * ldy, ldy);
  for (; r < rows; ++r) matmul_tile<T, 1>(x + r * ldx, ldx, w, ldw, k, n, y + r * ldy, ldy);
}

// out[o] = tanh(pre[o]) * sigmoid(pre[h + o]) (float: through the vectorizable fast_exp).
template <typename T>
inline __attribute__((always_inline)) void gate(const T* pre, int64_t h, T* out) {
  if constexpr (std::is_same_v<T, float>) {
#pragma omp simd
    for (int64_t o = 0; o < h; ++o) {
      const float t = 2.0f / (1.0f + fast_exp(-2.0f * pre[o])) - 1.0f;
      out[o] = t / (1.0f + fast_exp(-pre[h + o]));
    }
  } else {
    for (int64_t o = 0; o < h; ++o) out[o] = std::tanh(pre[o]) / (T(1) + std::exp(-pre[h + o]));
  }
}

// The inverse-CDF draw of pygen/sampling/draw.py: first level whose running sum of
// exp(z - max z), z = logits / temperature, exceeds u times the total (else the last level).
template <typename T>
inline __attribute__((always_inline)) int64_t draw(const T* logits, int64_t levels, T temperature,
                                                   T u, T* scratch) {
  T top = -INFINITY;
  for (int64_t l = 0; l < levels; ++l) {
    scratch[l] = logits[l] / temperature;
    top = std::max(top, scratch[l]);
  }
#pragma omp simd
  for (int64_t l = 0; l < levels; ++l) scratch[l] = fast_exp(scratch[l] - top);
  T total = 0;
  for (int64_t l = 0; l < levels; ++l) total += scratch[l];
  const T threshold = u * total;
  T cdf = 0;
  for (int64_t l = 0; l < levels; ++l) {
    cdf += scratch[l];
    if (cdf > threshold) return l;
  }
  return levels - 1;
}

// Buffers shared by the steps of one row.
template <typename T>
struct Rows {
  std::vector<T*> h_in;  // per layer: horizontal input of the current row, (B, W + k//2, Cin)
  std::vector<T*> link;  // per layer: link projection of the row's vertical stack, (B, W, 2h)
};

// One image row for samples [b0, b1): every pixel, channel and layer, the head and the draws.
template <typename T>
PYGEN_CLONES void horizontal_row(const Problem& p, const Net<T>& net, const Rows<T>& buf,
                                 const T* noise, uint64_t seed, int64_t i, int64_t b0, int64_t b1,
                                 int64_t* images, T* logits_out) {
  const int64_t rows = b1 - b0, h = p.hidden, h2 = 2 * h, pad = p.kernel / 2, kw = pad + 1;
  const int64_t wp = p.width + pad, levels = p.levels, n_out = p.channels * levels;
  const T scale = static_cast<T>(2.0 / static_cast<double>(levels - 1));
  const T temperature = static_cast<T>(p.temperature);
  std::vector<T> pre(rows * h2), gated(rows * h), top(rows * h), hid(rows * h), logits(rows * levels),
      scratch(levels);
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t cin = l == 0 ? p.channels : h;
    std::fill_n(buf.h_in[l] + b0 * wp * cin, rows * wp * cin, T(0));
  }
  for (int64_t j = 0; j < p.width; ++j) {
    for (int64_t c = 0; c < p.channels; ++c) {
      for (int64_t l = 0; l < p.layers; ++l) {
        const int64_t cin = l == 0 ? p.channels : h;
        const T* h_in = buf.h_in[l];
        for (int64_t r = 0; r < rows; ++r) {
          const T* bias = net.h_b[l] + (b0 + r) * h2;
          const T* link = buf.link[l] + ((b0 + r) * p.width + j) * h2;
#pragma omp simd
          for (int64_t o = 0; o < h2; ++o) pre[r * h2 + o] = bias[o] + link[o];
        }
        matmul_acc(h_in + (b0 * wp + j) * cin, wp * cin, net.h_w[l], h2, kw * cin, h2, pre.data(),
                   h2, rows);
        for (int64_t r = 0; r < rows; ++r) gate(pre.data() + r * h2, h, gated.data() + r * h);
        // The layer's output at (i, j) goes to the next layer's row buffer, the last one to `top`.
        const bool last = l + 1 == p.layers;
        T* dst = last ? top.data() : buf.h_in[l + 1] + (b0 * wp + j + pad) * h;
        const int64_t ld = last ? h : wp * h;
        for (int64_t r = 0; r < rows; ++r) {
          std::copy_n(net.out_b[l], h, dst + r * ld);
          if (l == 0) continue;  // the first layer has no residual connection
          const T* residual = h_in + ((b0 + r) * wp + j + pad) * h;
#pragma omp simd
          for (int64_t o = 0; o < h; ++o) dst[r * ld + o] += residual[o];
        }
        matmul_acc(gated.data(), h, net.out_w[l], h, h, h, dst, ld, rows);
      }
      // Head: ReLU -> 1x1 -> ReLU -> 1x1, only the logits of channel c.
      for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
        for (int64_t o = 0; o < h; ++o) {
          top[r * h + o] = std::max(top[r * h + o], T(0));
          hid[r * h + o] = net.b1[o];
        }
      }
      matmul_acc(top.data(), h, net.w1, h, h, h, hid.data(), h, rows);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t o = 0; o < h; ++o) hid[r * h + o] = std::max(hid[r * h + o], T(0));
        std::copy_n(net.b2 + c * levels, levels, logits.data() + r * levels);
      }
      matmul_acc(hid.data(), h, net.w2 + c * levels, n_out, h, levels, logits.data(), levels, rows);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t b = b0 + r;
        const int64_t g = ((b * p.channels + c) * p.height + i) * p.width + j;
        const T u = noise != nullptr ? noise[g] : static_cast<T>(uniform_at(g, seed));
        const T* lg = logits.data() + r * levels;
        const int64_t level = draw(lg, levels, temperature, u, scratch.data());
        images[g] = level;
        buf.h_in[0][(b * wp + j + pad) * p.channels + c] = static_cast<T>(level) * scale - T(1);
        if (logits_out != nullptr) {  // logits (B, L, C, H, W)
          const int64_t plane = p.channels * p.height * p.width, at_c = g - b * plane;
          for (int64_t l = 0; l < levels; ++l) logits_out[(b * levels + l) * plane + at_c] = lg[l];
        }
      }
    }
  }
}

// v_pre[r, :] += v_b[sample of r, :]; and, unless null, v_out[r, :] = gate(v_pre[r, :]).
template <typename T>
PYGEN_CLONES void bias_gate_rows(T* v_pre, const T* v_b, T* v_out, int64_t h, int64_t width,
                                 int64_t r0, int64_t r1) {
  const int64_t h2 = 2 * h;
  for (int64_t r = r0; r < r1; ++r) {
    T* row = v_pre + r * h2;
    const T* bias = v_b + (r / width) * h2;
#pragma omp simd
    for (int64_t o = 0; o < h2; ++o) row[o] += bias[o];
    if (v_out != nullptr) gate(row, h, v_out + r * h);
  }
}

template <typename T>
void run(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
         uint64_t seed, at::Tensor& images, at::Tensor& logits) {
  const Net<T> net(weights, p.layers);
  const int64_t bsz = p.batch, width = p.width, h = p.hidden, h2 = 2 * h, pad = p.kernel / 2;
  const int64_t kh = pad + 1, wv = width + 2 * pad, wp = width + pad, n_pix = bsz * width;
  const T scale = static_cast<T>(2.0 / static_cast<double>(p.levels - 1));
  const auto opts = weights[0].options();
  // Rolling buffers: per layer, the kh rows of vertical input its kernel reaches (slot i % kh
  // holds row i), zero-padded k//2 columns each side; rows above the image stay zero.
  std::vector<at::Tensor> v_in, cols, h_in, link;
  Rows<T> buf;
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t cin = l == 0 ? p.channels : h;
    v_in.push_back(at::zeros({bsz, kh, wv, cin}, opts));
    cols.push_back(at::empty({n_pix, kh * p.kernel * cin}, opts));
    h_in.push_back(at::zeros({bsz, wp, cin}, opts));
    link.push_back(at::empty({n_pix, h2}, opts));
    buf.h_in.push_back(h_in.back().mutable_data_ptr<T>());
    buf.link.push_back(link.back().mutable_data_ptr<T>());
  }
  at::Tensor v_pre = at::empty({n_pix, h2}, opts), v_out = at::empty({n_pix, h}, opts);
  int64_t* img = images.mutable_data_ptr<int64_t>();
  const T* noise_p = noise.defined() ? noise.const_data_ptr<T>() : nullptr;
  T* logits_p = p.return_logits ? logits.mutable_data_ptr<T>() : nullptr;
  const int64_t pix_grain = std::max<int64_t>(1, 4096 / h2);

  for (int64_t i = 0; i < p.height; ++i) {
    const int64_t slot = i % kh;
    for (int64_t l = 0; l < p.layers; ++l) {
      const int64_t cin = l == 0 ? p.channels : h, row_len = p.kernel * cin;
      T* vin = v_in[l].mutable_data_ptr<T>();
      T* col = cols[l].mutable_data_ptr<T>();
      const T* vo = v_out.const_data_ptr<T>();
      at::parallel_for(0, n_pix, pix_grain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / width, w = r % width;
          // Row i of this layer's vertical input: the image's row i - 1 (layer 0) or the previous
          // layer's gated vertical output.
          T* dst = vin + ((b * kh + slot) * wv + pad + w) * cin;
          for (int64_t c = 0; c < cin; ++c) {
            if (l > 0) {
              dst[c] = vo[r * h + c];
            } else if (i > 0) {
              const int64_t level = img[((b * p.channels + c) * p.height + i - 1) * width + w];
              dst[c] = static_cast<T>(level) * scale - T(1);
            }
          }
        }
      });
      at::parallel_for(0, n_pix, pix_grain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / width, w = r % width;
          for (int64_t di = 0; di < kh; ++di) {
            const int64_t s = ((i - kh + 1 + di) % kh + kh) % kh;
            std::copy_n(vin + ((b * kh + s) * wv + w) * cin, row_len, col + r * kh * row_len + di * row_len);
          }
        }
      });
      at::mm_out(v_pre, cols[l], weights[l * kPerLayer + kVW]);
      const bool last = l + 1 == p.layers;
      T* vp = v_pre.mutable_data_ptr<T>();
      T* vout = last ? nullptr : v_out.mutable_data_ptr<T>();
      const T* vb = net.v_b[l];
      at::parallel_for(0, n_pix, pix_grain, [&](int64_t r0, int64_t r1) {
        bias_gate_rows(vp, vb, vout, h, width, r0, r1);
      });
      at::mm_out(link[l], v_pre, weights[l * kPerLayer + kLinkW]);
    }
    at::parallel_for(0, bsz, 1, [&](int64_t b0, int64_t b1) {
      horizontal_row(p, net, buf, noise_p, seed, i, b0, b1, img, logits_p);
    });
  }
}

}  // namespace

void sample_cpu(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                const at::Tensor& seed, at::Tensor& images, at::Tensor& logits) {
  const uint64_t seed_v = noise.defined() ? 0 : static_cast<uint64_t>(seed.item<int64_t>());
  AT_DISPATCH_FLOATING_TYPES(weights[0].scalar_type(), "pixelcnn_sample_cpu", [&] {
    run<scalar_t>(p, weights, noise, seed_v, images, logits);
  });
}

}  // namespace pygen::pixelcnn
