// CPU kernel of the cached PixelCNN sampler (algorithm and layout: pixelcnn.h).
//
// Per image row: the vertical stack of every layer for the whole row and batch, then its link
// projection, each split over the threads in units of one sample's row x one tile of outputs.
// Then one parallel region runs the row's pixels: per value, per layer, one output position from
// the current row's buffers, with small matrix products over a group of samples (weights reused
// across them), then the head, the softmax and the draw. With at least as many samples as threads
// each thread is a group of its own; with fewer (batch 1), a team of threads shares each group and
// splits every product by output columns, meeting at a spin barrier after each product (17 per
// value for the default model): the per-value weights (1.1 MB) then stream from the cores' own L2
// caches. All products are common/cpu_matmul.h's matmul_acc.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <thread>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "common/cpu_draw.h"
#include "common/cpu_matmul.h"
#include "common/math.h"
#include "common/sampler.h"
#include "pixelcnn/pixelcnn.h"

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

// out[o] = tanh(pre[o]) * sigmoid(pre[h + o]) for o < n (float: through the vectorizable
// fast_tanh and fast_exp).
template <typename T>
inline __attribute__((always_inline)) void gate(const T* pre, int64_t h, int64_t n, T* out) {
  if constexpr (std::is_same_v<T, float>) {
#pragma omp simd
    for (int64_t o = 0; o < n; ++o) out[o] = fast_tanh(pre[o]) / (1.0f + fast_exp(-pre[h + o]));
  } else {
    for (int64_t o = 0; o < n; ++o) out[o] = std::tanh(pre[o]) / (T(1) + std::exp(-pre[h + o]));
  }
}

// Buffers shared by the steps of one row: the layers' row inputs and links, and the per-sample
// scratch of the horizontal stack and the head (rows of the whole batch; a group uses its own).
template <typename T>
struct Rows {
  std::vector<T*> h_in;  // per layer: horizontal input of the current row, (B, W + k//2, Cin)
  std::vector<T*> link;  // per layer: link projection of the row's vertical stack, (B, W, 2h)
  T *pre, *gated, *top, *hid, *logits, *scratch;  // (B, 2h), (B, h) x 3, (B, L) x 2
};

// A sense-counting spin barrier for the threads of one team. Teams are at most a few threads that
// meet every few microseconds, so spinning beats sleeping; past a while it yields the core.
struct alignas(64) SpinBarrier {
  std::atomic<int64_t> arrived{0}, phase{0};

  void wait(int64_t members) {
    if (members == 1) return;
    const int64_t current = phase.load(std::memory_order_relaxed);
    if (arrived.fetch_add(1, std::memory_order_acq_rel) + 1 == members) {
      arrived.store(0, std::memory_order_relaxed);
      phase.store(current + 1, std::memory_order_release);
      return;
    }
    for (int64_t spins = 0; phase.load(std::memory_order_acquire) == current; ++spins) {
      if (spins < 4096) {
#if defined(__x86_64__)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }
};

// One thread's place: member `rank` of a team of `size` sharing a barrier.
struct Team {
  SpinBarrier* barrier;
  int64_t rank, size;

  void sync() const { barrier->wait(size); }

  // This member's share [begin, end) of n outputs, split in whole tiles of `tile`.
  std::pair<int64_t, int64_t> share(int64_t n, int64_t tile) const {
    const int64_t tiles = (n + tile - 1) / tile;
    return {std::min(n, rank * tiles / size * tile), std::min(n, (rank + 1) * tiles / size * tile)};
  }
};

// One image row for samples [b0, b1): every pixel, channel and layer, the head and the draws. Each
// member of the team computes its share of the outputs of every product; the first one draws.
template <typename T>
PYGEN_MATMUL_CLONES void horizontal_row(const Problem& p, const Net<T>& net, const Rows<T>& buf,
                                 const Team& team, const ValueSource<T>& source, int64_t i,
                                 int64_t b0, int64_t b1, int64_t* images, T* logits_out) {
  // Shares in tiles of the 32-byte product, which the 64-byte one runs too for a share's last half
  // tile: a team of 4 on 64 gate outputs then has 16 each, not two members idle.
  constexpr int64_t kShareTile = 2 * kLanes<T, 32>;
  const int64_t rows = b1 - b0, h = p.hidden, h2 = 2 * h, pad = p.kernel / 2, kw = pad + 1;
  const int64_t wp = p.width + pad, levels = p.levels, n_out = p.channels * levels;
  const T scale = static_cast<T>(2.0 / static_cast<double>(levels - 1));
  const T temperature = static_cast<T>(p.temperature);
  const auto [o0, o1] = team.share(h, kShareTile);
  const auto [v0, v1] = team.share(levels, kShareTile);
  const int64_t n_o = o1 - o0, n_v = v1 - v0;
  T *pre = buf.pre + b0 * h2, *gated = buf.gated + b0 * h, *top = buf.top + b0 * h;
  T *hid = buf.hid + b0 * h, *logits = buf.logits + b0 * levels;
  if (team.rank == 0) {
    for (int64_t l = 0; l < p.layers; ++l) {
      const int64_t cin = l == 0 ? p.channels : h;
      std::fill_n(buf.h_in[l] + b0 * wp * cin, rows * wp * cin, T(0));
    }
  }
  team.sync();
  for (int64_t j = 0; j < p.width; ++j) {
    for (int64_t c = 0; c < p.channels; ++c) {
      for (int64_t l = 0; l < p.layers; ++l) {
        const int64_t cin = l == 0 ? p.channels : h;
        const T* h_in = buf.h_in[l];
        // Pre-activations of this member's gate outputs: columns [o0, o1) and h + [o0, o1).
        for (int64_t r = 0; r < rows; ++r) {
          const T* bias = net.h_b[l] + (b0 + r) * h2;
          const T* link = buf.link[l] + ((b0 + r) * p.width + j) * h2;
          for (const int64_t half : {int64_t{0}, h}) {
#pragma omp simd
            for (int64_t o = half + o0; o < half + o1; ++o) pre[r * h2 + o] = bias[o] + link[o];
          }
        }
        const T* window = h_in + (b0 * wp + j) * cin;
        for (const int64_t half : {int64_t{0}, h}) {
          matmul_acc(window, wp * cin, net.h_w[l] + half + o0, h2, kw * cin, n_o,
                     pre + half + o0, h2, rows);
        }
        for (int64_t r = 0; r < rows; ++r) gate(pre + r * h2 + o0, h, n_o, gated + r * h + o0);
        team.sync();
        // The layer's output at (i, j) goes to the next layer's row buffer, the last one to `top`
        // (through the head's first ReLU).
        const bool last = l + 1 == p.layers;
        T* dst = last ? top : buf.h_in[l + 1] + (b0 * wp + j + pad) * h;
        const int64_t ld = last ? h : wp * h;
        for (int64_t r = 0; r < rows; ++r) {
          std::copy_n(net.out_b[l] + o0, n_o, dst + r * ld + o0);
          if (l == 0) continue;  // the first layer has no residual connection
          const T* residual = h_in + ((b0 + r) * wp + j + pad) * h;
#pragma omp simd
          for (int64_t o = o0; o < o1; ++o) dst[r * ld + o] += residual[o];
        }
        matmul_acc(gated, h, net.out_w[l] + o0, h, h, n_o, dst + o0, ld, rows);
        if (last) {
          for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
            for (int64_t o = o0; o < o1; ++o) top[r * h + o] = std::max(top[r * h + o], T(0));
          }
        }
        team.sync();
      }
      // Head: (ReLU) -> 1x1 -> ReLU -> 1x1, only the logits of channel c.
      for (int64_t r = 0; r < rows; ++r) std::copy_n(net.b1 + o0, n_o, hid + r * h + o0);
      matmul_acc(top, h, net.w1 + o0, h, h, n_o, hid + o0, h, rows);
      for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
        for (int64_t o = o0; o < o1; ++o) hid[r * h + o] = std::max(hid[r * h + o], T(0));
      }
      team.sync();
      for (int64_t r = 0; r < rows; ++r) {
        std::copy_n(net.b2 + c * levels + v0, n_v, logits + r * levels + v0);
      }
      matmul_acc(hid, h, net.w2 + c * levels + v0, n_out, h, n_v, logits + v0, levels, rows);
      team.sync();
      if (team.rank == 0) {
        for (int64_t r = 0; r < rows; ++r) {
          const int64_t b = b0 + r;
          const int64_t g = ((b * p.channels + c) * p.height + i) * p.width + j;
          const T* lg = logits + r * levels;
          const int64_t level = source.level(g, lg, levels, temperature, buf.scratch + b0 * levels);
          images[g] = level;
          buf.h_in[0][(b * wp + j + pad) * p.channels + c] = static_cast<T>(level) * scale - T(1);
          if (logits_out != nullptr) {  // logits (B, L, C, H, W)
            const int64_t plane = p.channels * p.height * p.width, at_c = g - b * plane;
            T* out = logits_out + b * levels * plane + at_c;
            for (int64_t v = 0; v < levels; ++v) out[v * plane] = lg[v];
          }
        }
      }
      team.sync();
    }
  }
}

// One unit of the vertical stack at row i: outputs [o, o + n) of one sample's row, y[w, :n] =
// bias[:n] + its kh x k window of rows above. Each of the kh window rows is one product whose rows
// (one per pixel) overlap in the padded buffer `vin` (kh, W + 2 (k//2), cin), cin values apart.
// `w_v` and `y` start at column o (row strides 2h).
template <typename T>
PYGEN_MATMUL_CLONES void vertical_unit(const Problem& p, int64_t i, int64_t cin, const T* vin,
                                const T* w_v, const T* bias, int64_t n, T* y) {
  const int64_t h2 = 2 * p.hidden, kh = p.kernel / 2 + 1, row_len = p.kernel * cin;
  const int64_t wv = p.width + 2 * (p.kernel / 2);
  for (int64_t w = 0; w < p.width; ++w) std::copy_n(bias, n, y + w * h2);
  for (int64_t di = 0; di < kh; ++di) {
    const int64_t slot = ((i - kh + 1 + di) % kh + kh) % kh;  // holds row i - kh + 1 + di
    matmul_acc(vin + slot * wv * cin, cin, w_v + di * row_len * h2, h2, row_len, n, y, h2,
               p.width);
  }
}

// One unit of the link projection: y[w, :n] = v_pre[w, :] @ link_w[:, o:o + n] for one sample's
// row (`link_w` and `y` start at column o).
template <typename T>
PYGEN_MATMUL_CLONES void link_unit(const Problem& p, const T* v_pre, const T* link_w, int64_t n, T* y) {
  const int64_t h2 = 2 * p.hidden;
  for (int64_t w = 0; w < p.width; ++w) std::fill_n(y + w * h2, n, T(0));
  matmul_acc(v_pre, h2, link_w, h2, h2, n, y, h2, p.width);
}

// How the horizontal stack's threads share the batch: `groups` groups of samples, each run by a
// team of `team` threads (one per group when there are samples enough; at most one thread per
// 16 gate outputs, below which a share is too small to pay for its barriers).
struct ThreadSplit {
  int64_t groups, team;
};

ThreadSplit split_threads(int64_t threads, int64_t batch, int64_t hidden) {
  const int64_t groups = std::max<int64_t>(1, std::min(threads, batch));
  const int64_t team = std::clamp<int64_t>(threads / groups, 1, std::max<int64_t>(1, hidden / 16));
  return {groups, team};
}

// f(thread, n_threads) on each thread of one parallel region (OpenMP: all of the team run at once,
// which the spin barriers need; nested in another region, or without OpenMP, a team of one).
template <typename F>
void in_parallel(int64_t threads, const F& f) {
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
  f(omp_get_thread_num(), omp_get_num_threads());
#else
  (void)threads;
  f(0, 1);
#endif
}

template <typename T>
void run(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
         uint64_t seed, const at::Tensor& given, const std::vector<uint8_t>& given_rows,
         at::Tensor& images, at::Tensor& logits) {
  const Net<T> net(weights, p.layers);
  const int64_t bsz = p.batch, width = p.width, h = p.hidden, h2 = 2 * h, pad = p.kernel / 2;
  const int64_t kh = pad + 1, wv = width + 2 * pad, wp = width + pad, n_pix = bsz * width;
  const T scale = static_cast<T>(2.0 / static_cast<double>(p.levels - 1));
  const auto opts = weights[0].options();
  // Rolling buffers: per layer, the kh rows of vertical input its kernel reaches (slot i % kh
  // holds row i), zero-padded k//2 columns each side; rows above the image stay zero.
  std::vector<at::Tensor> v_in, h_in, link;
  std::vector<T*> v_in_p;
  Rows<T> buf;
  for (int64_t l = 0; l < p.layers; ++l) {
    const int64_t cin = l == 0 ? p.channels : h;
    v_in.push_back(at::zeros({bsz, kh, wv, cin}, opts));
    h_in.push_back(at::zeros({bsz, wp, cin}, opts));
    link.push_back(at::empty({n_pix, h2}, opts));
    v_in_p.push_back(v_in.back().mutable_data_ptr<T>());
    buf.h_in.push_back(h_in.back().mutable_data_ptr<T>());
    buf.link.push_back(link.back().mutable_data_ptr<T>());
  }
  at::Tensor v_pre = at::empty({n_pix, h2}, opts);
  T* vp = v_pre.mutable_data_ptr<T>();
  int64_t* img = images.mutable_data_ptr<int64_t>();
  const ValueSource<T> source{noise.defined() ? noise.const_data_ptr<T>() : nullptr, seed,
                              given.defined() ? given.const_data_ptr<int64_t>() : nullptr};
  T* logits_p = p.return_logits ? logits.mutable_data_ptr<T>() : nullptr;
  const int64_t pix_grain = std::max<int64_t>(1, 4096 / h2);
  at::Tensor scratch = at::empty({bsz, h2 + 3 * h + 2 * p.levels}, opts);
  buf.pre = scratch.mutable_data_ptr<T>();
  buf.gated = buf.pre + bsz * h2;
  buf.top = buf.gated + bsz * h;
  buf.hid = buf.top + bsz * h;
  buf.logits = buf.hid + bsz * h;
  buf.scratch = buf.logits + bsz * p.levels;
  const ThreadSplit plan = split_threads(at::get_num_threads(), bsz, h);
  const int64_t threads = plan.groups * plan.team;
  std::vector<SpinBarrier> barriers(plan.groups);
  // The vertical stack's products run in units of one sample's row x one tile of outputs.
  const int64_t tile = matmul_tile_width<T>();
  const int64_t tiles = (h2 + tile - 1) / tile;

  for (int64_t i = 0; i < p.height; ++i) {
    const int64_t slot = i % kh;
    if (i > 0) {  // row i of the first layer's vertical input: the image's row i - 1
      at::parallel_for(0, n_pix, pix_grain, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          const int64_t b = r / width, w = r % width;
          T* dst = v_in_p[0] + ((b * kh + slot) * wv + pad + w) * p.channels;
          for (int64_t c = 0; c < p.channels; ++c) {
            const int64_t level = img[((b * p.channels + c) * p.height + i - 1) * width + w];
            dst[c] = static_cast<T>(level) * scale - T(1);
          }
        }
      });
    }
    for (int64_t l = 0; l < p.layers; ++l) {
      const int64_t cin = l == 0 ? p.channels : h;
      const T* vin = v_in_p[l];
      const T* v_w = net.v_w[l];
      at::parallel_for(0, bsz * tiles, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t b = u / tiles, o = u % tiles * tile;
          vertical_unit(p, i, cin, vin + b * kh * wv * cin, v_w + o, net.v_b[l] + b * h2 + o,
                        std::min(tile, h2 - o), vp + b * width * h2 + o);
        }
      });
      // Gate into row i of the next layer's vertical input; link = v_pre @ link_w.
      if (l + 1 < p.layers) {
        T* next = v_in_p[l + 1];
        at::parallel_for(0, n_pix, pix_grain, [&](int64_t r0, int64_t r1) {
          for (int64_t r = r0; r < r1; ++r) {
            const int64_t b = r / width, w = r % width;
            gate(vp + r * h2, h, h, next + ((b * kh + slot) * wv + pad + w) * h);
          }
        });
      }
      T* lk = buf.link[l];
      const T* link_w = net.link_w[l];
      at::parallel_for(0, bsz * tiles, 1, [&](int64_t u0, int64_t u1) {
        for (int64_t u = u0; u < u1; ++u) {
          const int64_t b = u / tiles, o = u % tiles * tile;
          link_unit(p, vp + b * width * h2, link_w + o, std::min(tile, h2 - o),
                    lk + b * width * h2 + o);
        }
      });
    }
    if (given_rows[i] != 0) {  // nothing to draw: the row as given
      images.select(2, i).copy_(given.select(2, i));
      continue;
    }
    in_parallel(threads, [&](int64_t thread, int64_t n_threads) {
      const ThreadSplit split = n_threads == threads ? plan : split_threads(n_threads, bsz, h);
      const int64_t group = thread / split.team;
      if (group >= split.groups) return;
      const Team team{&barriers[group], thread % split.team, split.team};
      horizontal_row(p, net, buf, team, source, i, group * bsz / split.groups,
                     (group + 1) * bsz / split.groups, img, logits_p);
    });
  }
}

}  // namespace

void sample_cpu(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                const at::Tensor& seed, const at::Tensor& given,
                const std::vector<uint8_t>& given_rows, at::Tensor& images, at::Tensor& logits) {
  const uint64_t seed_v = noise.defined() ? 0 : static_cast<uint64_t>(seed.item<int64_t>());
  dispatch_sampler(weights, noise, logits,
                       [&]<typename T>(const std::vector<at::Tensor>& w, const at::Tensor& u,
                                       at::Tensor& out) { run<T>(p, w, u, seed_v, given, given_rows, images, out); });
}

}  // namespace pygen::pixelcnn
