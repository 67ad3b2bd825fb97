// CPU kernel of the cached PixelRNN sampler (algorithm: pixelrnn.h and its PyTorch twin).
//
// Samples are independent, so the batch is split into groups of up to 8, each run from the first
// value to the last by one thread with buffers of its own: no barriers. Every product of a step is
// one matmul_acc (common/cpu_matmul.h) over the group's samples, which reads each weight once per
// group instead of once per sample.
#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "common/cpu_draw.h"
#include "common/cpu_matmul.h"
#include "common/math.h"
#include "common/sampler.h"
#include "pixelrnn/pixelrnn.h"

namespace pygen::pixelrnn {
namespace {

constexpr int64_t kGroup = 8;  // samples per group at most (matmul_acc tiles rows by 4 or 3)

// Raw views of one direction's weights: (in, out) matrices, 4h gate columns.
template <typename T>
struct Direction {
  const T *is_w, *is_b, *ss_w, *ss_b, *ex_w = nullptr, *ex_b = nullptr;

  Direction() = default;
  Direction(const at::Tensor* w, bool extra)
      : is_w(w[kIsW].const_data_ptr<T>()),
        is_b(w[kIsB].const_data_ptr<T>()),
        ss_w(w[kSsW].const_data_ptr<T>()),
        ss_b(w[kSsB].const_data_ptr<T>()) {
    if (extra) {
      ex_w = w[kExW].const_data_ptr<T>();
      ex_b = w[kExB].const_data_ptr<T>();
    }
  }
};

// Raw views of the flat weight list (layout: pixelrnn.h). A Row LSTM layer uses `ltr` only.
template <typename T>
struct Net {
  struct Layer {
    Direction<T> ltr, rtl;
    const T *out_w, *out_b;
  };
  const T *in_w, *in_b, *w1, *b1, *w2, *b2;
  std::vector<Layer> layers;

  Net(const std::vector<at::Tensor>& w, const Problem& p) {
    in_w = w[kInW].const_data_ptr<T>();
    in_b = w[kInB].const_data_ptr<T>();
    const int64_t per_layer = p.diagonal ? kDiagonalLayer : kRowLayer;
    for (int64_t l = 0; l < p.layers; ++l) {
      const at::Tensor* lw = &w[kInput + l * per_layer];
      Layer layer;
      layer.ltr = Direction<T>(lw, false);
      if (p.diagonal) layer.rtl = Direction<T>(lw + kDirection, true);
      const at::Tensor* out = lw + per_layer - kOut;
      layer.out_w = out[0].const_data_ptr<T>();
      layer.out_b = out[1].const_data_ptr<T>();
      layers.push_back(layer);
    }
    const at::Tensor* hw = &w[kInput + p.layers * per_layer];
    w1 = hw[kW1].const_data_ptr<T>();
    b1 = hw[kB1].const_data_ptr<T>();
    w2 = hw[kW2].const_data_ptr<T>();
    b2 = hw[kB2].const_data_ptr<T>();
  }
};

template <typename T>
inline __attribute__((always_inline)) T sigmoid(T x) {
  return T(1) / (T(1) + fast_exp(-x));
}

// One LSTM update of one sample (pygen.layers.lstm_cell): gate pre-activations `pre` (4h, laid
// out (groups, [i, f, o, g], h / groups)) and the cell `c` (h) to the new `h_out` and `c_out`.
template <typename T>
inline __attribute__((always_inline)) void lstm_cell(const T* pre, const T* c, int64_t h,
                                                     int64_t groups, T* h_out, T* c_out) {
  const int64_t size = h / groups;
  for (int64_t g = 0; g < groups; ++g) {
    const T* gate = pre + g * 4 * size;
    const int64_t o = g * size;
#pragma omp simd
    for (int64_t s = 0; s < size; ++s) {
      const T cell = sigmoid(gate[size + s]) * c[o + s] +
                     sigmoid(gate[s]) * fast_tanh(gate[3 * size + s]);
      c_out[o + s] = cell;
      h_out[o + s] = sigmoid(gate[2 * size + s]) * fast_tanh(cell);
    }
  }
}

// y[r, :n] = bias[:n] for r < rows (row stride ldy).
template <typename T>
inline __attribute__((always_inline)) void fill_rows(T* y, int64_t ldy, int64_t rows,
                                                     const T* bias, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) std::copy_n(bias, n, y + r * ldy);
}

// y[r, :n] = a[:n] + b[:n] for r < rows.
template <typename T>
inline __attribute__((always_inline)) void fill_rows(T* y, int64_t ldy, int64_t rows, const T* a,
                                                     const T* b, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
#pragma omp simd
    for (int64_t o = 0; o < n; ++o) y[r * ldy + o] = a[o] + b[o];
  }
}

// States (h, c) of a Diagonal LSTM direction left of each row's first pixel, (H, 2, h): the
// recurrence run on zero inputs, the same for every image (the twin's _boundary_states).
template <typename T>
std::vector<T> boundary_states(const Problem& p, const Direction<T>& d) {
  const int64_t h = p.hidden, h4 = 4 * h;
  std::vector<T> states(p.height * 2 * h, T(0)), pre(h4);
  for (int64_t t = 1; t < p.height; ++t) {
    const T* prev = states.data() + (t - 1) * 2 * h;
    std::copy_n(d.ss_b, h4, pre.data());
    matmul_acc(prev, h, d.ss_w, h4, h, h4, pre.data(), h4, 1);           // the pixel above
    matmul_acc(prev, h, d.ss_w + h * h4, h4, h, h4, pre.data(), h4, 1);  // the pixel to the left
    T* next = states.data() + t * 2 * h;
    lstm_cell(pre.data(), prev + h, h, p.channels, next, next + h);
  }
  return states;
}

// One group of `rows` samples starting at sample b0, every value in order.
template <typename T>
class Group {
 public:
  Group(const Problem& p, const Net<T>& net, int64_t b0, int64_t rows,
        const ValueSource<T>& source, int64_t* images, T* logits_out)
      : p_(p),
        net_(net),
        b0_(b0),
        rows_(rows),
        source_(source),
        images_(images),
        logits_out_(logits_out),
        pad_(p.kernel / 2),
        img_width_(p.width + 2 * pad_),
        img_stride_((p.height + pad_) * img_width_ * p.channels),
        img_(rows * img_stride_, T(0)),
        u_(rows * p.hidden),
        pre_(rows * 4 * p.hidden),
        top_(rows * p.hidden),
        hid_(rows * p.hidden),
        logits_(rows * p.levels),
        scratch_(p.levels) {}

  // The scaled image (B, H + k//2, W + 2 (k//2), C), zero-padded above and on both sides: the
  // input convolution's window of pixel (i, j) starts at row i and column j.
  __attribute__((always_inline)) T* img_at(int64_t r, int64_t i, int64_t j) {
    return img_.data() + r * img_stride_ + (i * img_width_ + j) * p_.channels;
  }

  // u = the mask A input convolution at (i, j) (the twin's _input_features): one product per
  // window row, each a k * C slice of the padded scaled image.
  __attribute__((always_inline)) void input_features(int64_t i, int64_t j) {
    const int64_t h = p_.hidden, row_len = p_.kernel * p_.channels;
    fill_rows(u_.data(), h, rows_, net_.in_b, h);
    for (int64_t di = 0; di <= pad_; ++di) {
      matmul_acc(img_at(0, i + di, j), img_stride_, net_.in_w + di * row_len * h, h, row_len, h,
                 u_.data(), h, rows_);
    }
  }

  // u += out_b + x @ out_w: a layer's residual output (x: (rows, h), row stride ldx).
  __attribute__((always_inline)) void residual(const typename Net<T>::Layer& layer, const T* x,
                                               int64_t ldx) {
    const int64_t h = p_.hidden;
    for (int64_t r = 0; r < rows_; ++r) {
#pragma omp simd
      for (int64_t o = 0; o < h; ++o) u_[r * h + o] += layer.out_b[o];
    }
    matmul_acc(x, ldx, layer.out_w, h, h, h, u_.data(), h, rows_);
  }

  // The head on u (ReLU -> 1x1 -> ReLU -> 1x1, channel c's logits only), the draw of value
  // (c, i, j) of each sample, and its scaled level written into the image.
  __attribute__((always_inline)) void head_and_draw(int64_t c, int64_t i, int64_t j) {
    const int64_t h = p_.hidden, levels = p_.levels;
    for (int64_t q = 0; q < rows_ * h; ++q) top_[q] = std::max(u_[q], T(0));
    fill_rows(hid_.data(), h, rows_, net_.b1, h);
    matmul_acc(top_.data(), h, net_.w1, h, h, h, hid_.data(), h, rows_);
    for (int64_t q = 0; q < rows_ * h; ++q) hid_[q] = std::max(hid_[q], T(0));
    fill_rows(logits_.data(), levels, rows_, net_.b2 + c * levels, levels);
    matmul_acc(hid_.data(), h, net_.w2 + c * levels, p_.channels * levels, h, levels,
               logits_.data(), levels, rows_);
    const T scale = static_cast<T>(2.0 / static_cast<double>(levels - 1));
    const T temperature = static_cast<T>(p_.temperature);
    const int64_t plane = p_.channels * p_.height * p_.width;
    for (int64_t r = 0; r < rows_; ++r) {
      const int64_t b = b0_ + r;
      const int64_t g = ((b * p_.channels + c) * p_.height + i) * p_.width + j;
      const T* lg = logits_.data() + r * levels;
      const int64_t level = source_.level(g, lg, levels, temperature, scratch_.data());
      images_[g] = level;
      img_at(r, i + pad_, j + pad_)[c] = static_cast<T>(level) * scale - T(1);
      if (logits_out_ != nullptr) {  // logits (B, L, C, H, W)
        T* out = logits_out_ + b * levels * plane + (g - b * plane);
        for (int64_t v = 0; v < levels; ++v) out[v * plane] = lg[v];
      }
    }
  }

  // Every value of the group, in order (the helpers above are inlined into these two, which are
  // compiled for AVX2 too).
  PYGEN_MATMUL_CLONES void run_row_lstm();
  PYGEN_MATMUL_CLONES void run_diagonal_bilstm(const std::vector<std::vector<T>>& ltr_edges,
                           const std::vector<std::vector<T>>& rtl_edges);

 private:
  const Problem& p_;
  const Net<T>& net_;
  const int64_t b0_, rows_;
  const ValueSource<T> source_;
  int64_t* images_;
  T* logits_out_;
  const int64_t pad_, img_width_, img_stride_;
  std::vector<T> img_, u_, pre_, top_, hid_, logits_, scratch_;
};

// Row LSTM. Per layer: the row's inputs, zero-padded kw - 1 columns on the left (kw: the taps of
// the input-to-state convolution up to the centre); the hidden states of the row above and of this
// row, zero-padded one column each side (the state-to-state convolution's taps are 3); the cells.
template <typename T>
PYGEN_MATMUL_CLONES void Group<T>::run_row_lstm() {
  const int64_t h = p_.hidden, h4 = 4 * h, width = p_.width, kw = p_.row_kernel;
  const int64_t in_width = width + kw - 1, state_width = width + 2;
  struct Buffers {
    std::vector<T> inputs, h_above, h_row, c_above, c_row, from_above;
  };
  std::vector<Buffers> bufs(p_.layers);
  for (auto& b : bufs) {
    b.inputs.assign(rows_ * in_width * h, T(0));
    b.h_above.assign(rows_ * state_width * h, T(0));
    b.h_row.assign(rows_ * state_width * h, T(0));
    b.c_above.assign(rows_ * width * h, T(0));
    b.c_row.assign(rows_ * width * h, T(0));
    b.from_above.resize(rows_ * width * h4);
  }
  for (int64_t i = 0; i < p_.height; ++i) {
    // The row recurrence, once per row and layer: both biases plus the 3 taps of the row above.
    for (int64_t l = 0; l < p_.layers; ++l) {
      const Direction<T>& d = net_.layers[l].ltr;
      Buffers& b = bufs[l];
      fill_rows(b.from_above.data(), h4, rows_ * width, d.is_b, d.ss_b, h4);
      for (int64_t r = 0; r < rows_; ++r) {
        matmul_acc(b.h_above.data() + r * state_width * h, h, d.ss_w, h4, 3 * h, h4,
                   b.from_above.data() + r * width * h4, h4, width);
      }
    }
    for (int64_t j = 0; j < width; ++j) {
      for (int64_t c = 0; c < p_.channels; ++c) {
        input_features(i, j);
        for (int64_t l = 0; l < p_.layers; ++l) {
          const auto& layer = net_.layers[l];
          Buffers& b = bufs[l];
          for (int64_t r = 0; r < rows_; ++r) {
            std::copy_n(u_.data() + r * h, h, b.inputs.data() + (r * in_width + j + kw - 1) * h);
            std::copy_n(b.from_above.data() + (r * width + j) * h4, h4, pre_.data() + r * h4);
          }
          matmul_acc(b.inputs.data() + j * h, in_width * h, layer.ltr.is_w, h4, kw * h, h4,
                     pre_.data(), h4, rows_);
          T* h_new = b.h_row.data() + (j + 1) * h;
          for (int64_t r = 0; r < rows_; ++r) {
            lstm_cell(pre_.data() + r * h4, b.c_above.data() + (r * width + j) * h, h,
                      p_.channels, h_new + r * state_width * h,
                      b.c_row.data() + (r * width + j) * h);
          }
          residual(layer, h_new, state_width * h);
        }
        head_and_draw(c, i, j);
      }
    }
    // A pixel's last channel feeds none of the states at that pixel: the row's are final.
    for (auto& b : bufs) {
      std::swap(b.h_above, b.h_row);
      std::swap(b.c_above, b.c_row);
    }
  }
}

// Diagonal BiLSTM. Per layer: the row's inputs; the left-to-right states of the row above and of
// this row, with the cells; the right-to-left direction's hidden states of the row above (its
// output, shifted down one row) and, while it runs along a complete row, its pre-activations,
// states and cells.
template <typename T>
PYGEN_MATMUL_CLONES void Group<T>::run_diagonal_bilstm(const std::vector<std::vector<T>>& ltr_edges,
                                   const std::vector<std::vector<T>>& rtl_edges) {
  const int64_t h = p_.hidden, h4 = 4 * h, width = p_.width, row = width * h;
  struct Buffers {
    std::vector<T> inputs, h_above, h_row, c_row, from_above, back_above, back_pre, h_back, c_back;
  };
  std::vector<Buffers> bufs(p_.layers);
  for (auto& b : bufs) {
    b.inputs.assign(rows_ * row, T(0));
    b.h_above.assign(rows_ * row, T(0));
    b.h_row.assign(rows_ * row, T(0));
    b.c_row.assign(rows_ * row, T(0));
    b.from_above.resize(rows_ * width * h4);
    b.back_above.assign(rows_ * row, T(0));
    b.back_pre.resize(rows_ * width * h4);
    b.h_back.resize(rows_ * row);
    b.c_back.resize(rows_ * row);
  }
  std::vector<T> sum(rows_ * h);  // a layer's two directions at one pixel
  for (int64_t i = 0; i < p_.height; ++i) {
    // Left to right, once per row and layer: both biases plus the state above each pixel.
    for (int64_t l = 0; l < p_.layers; ++l) {
      const Direction<T>& d = net_.layers[l].ltr;
      Buffers& b = bufs[l];
      fill_rows(b.from_above.data(), h4, rows_ * width, d.is_b, d.ss_b, h4);
      matmul_acc(b.h_above.data(), h, d.ss_w, h4, h, h4, b.from_above.data(), h4, rows_ * width);
    }
    for (int64_t j = 0; j < width; ++j) {
      for (int64_t c = 0; c < p_.channels; ++c) {
        input_features(i, j);
        for (int64_t l = 0; l < p_.layers; ++l) {
          const auto& layer = net_.layers[l];
          Buffers& b = bufs[l];
          for (int64_t r = 0; r < rows_; ++r) {
            std::copy_n(u_.data() + r * h, h, b.inputs.data() + r * row + j * h);
            std::copy_n(b.from_above.data() + (r * width + j) * h4, h4, pre_.data() + r * h4);
          }
          matmul_acc(u_.data(), h, layer.ltr.is_w, h4, h, h4, pre_.data(), h4, rows_);
          // The pixel to the left: this row's column j - 1, or the boundary state (any sample's).
          const T* edge = ltr_edges[l].data() + i * 2 * h;
          const T* h_left = j > 0 ? b.h_row.data() + (j - 1) * h : edge;
          matmul_acc(h_left, j > 0 ? row : 0, layer.ltr.ss_w + h * h4, h4, h, h4, pre_.data(), h4,
                     rows_);
          for (int64_t r = 0; r < rows_; ++r) {
            const int64_t at = r * row + j * h;
            const T* c_left = j > 0 ? b.c_row.data() + at - h : edge + h;
            lstm_cell(pre_.data() + r * h4, c_left, h, p_.channels, b.h_row.data() + at,
                      b.c_row.data() + at);
#pragma omp simd
            for (int64_t o = 0; o < h; ++o) sum[r * h + o] = b.h_row[at + o] + b.back_above[at + o];
          }
          residual(layer, sum.data(), h);
        }
        head_and_draw(c, i, j);
      }
    }
    // Row i is complete: the right-to-left direction runs along it, right to left, from its
    // inputs, the image row and its states of the row above.
    for (int64_t l = 0; l < p_.layers; ++l) {
      const Direction<T>& d = net_.layers[l].rtl;
      Buffers& b = bufs[l];
      for (int64_t r = 0; r < rows_; ++r) {
        T* pre = b.back_pre.data() + r * width * h4;
        for (int64_t w = 0; w < width; ++w) {
#pragma omp simd
          for (int64_t o = 0; o < h4; ++o) pre[w * h4 + o] = d.is_b[o] + d.ex_b[o] + d.ss_b[o];
        }
        matmul_acc(b.inputs.data() + r * row, h, d.is_w, h4, h, h4, pre, h4, width);
        matmul_acc(img_at(r, i + pad_, pad_), p_.channels, d.ex_w, h4, p_.channels, h4, pre, h4,
                   width);
        matmul_acc(b.back_above.data() + r * row, h, d.ss_w, h4, h, h4, pre, h4, width);
      }
      const T* edge = rtl_edges[l].data() + i * 2 * h;
      for (int64_t j = width - 1; j >= 0; --j) {
        const bool last = j == width - 1;
        const T* h_left = last ? edge : b.h_back.data() + (j + 1) * h;
        T* pre = b.back_pre.data() + j * h4;
        matmul_acc(h_left, last ? 0 : row, d.ss_w + h * h4, h4, h, h4, pre, width * h4, rows_);
        for (int64_t r = 0; r < rows_; ++r) {
          const int64_t at = r * row + j * h;
          const T* c_left = last ? edge + h : b.c_back.data() + at + h;
          lstm_cell(pre + r * width * h4, c_left, h, p_.channels, b.h_back.data() + at,
                    b.c_back.data() + at);
        }
      }
      std::swap(b.back_above, b.h_back);
      std::swap(b.h_above, b.h_row);
    }
  }
}

template <typename T>
void run(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
         uint64_t seed, const at::Tensor& given, at::Tensor& images, at::Tensor& logits) {
  const Net<T> net(weights, p);
  std::vector<std::vector<T>> ltr_edges, rtl_edges;
  if (p.diagonal) {
    for (const auto& layer : net.layers) {
      ltr_edges.push_back(boundary_states(p, layer.ltr));
      rtl_edges.push_back(boundary_states(p, layer.rtl));
    }
  }
  const int64_t threads = at::get_num_threads();
  const int64_t group = std::clamp<int64_t>((p.batch + threads - 1) / threads, 1, kGroup);
  const int64_t n_groups = (p.batch + group - 1) / group;
  int64_t* img = images.mutable_data_ptr<int64_t>();
  const ValueSource<T> source{noise.defined() ? noise.const_data_ptr<T>() : nullptr, seed,
                              given.defined() ? given.const_data_ptr<int64_t>() : nullptr};
  T* logits_p = p.return_logits ? logits.mutable_data_ptr<T>() : nullptr;
  at::parallel_for(0, n_groups, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      const int64_t b0 = g * group;
      Group<T> samples(p, net, b0, std::min(group, p.batch - b0), source, img, logits_p);
      if (p.diagonal) {
        samples.run_diagonal_bilstm(ltr_edges, rtl_edges);
      } else {
        samples.run_row_lstm();
      }
    }
  });
}

}  // namespace

void sample_cpu(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                const at::Tensor& seed, const at::Tensor& given, at::Tensor& images,
                at::Tensor& logits) {
  const uint64_t seed_v = noise.defined() ? 0 : static_cast<uint64_t>(seed.item<int64_t>());
  dispatch_sampler(weights, noise, logits,
                       [&]<typename T>(const std::vector<at::Tensor>& w, const at::Tensor& u,
                                       at::Tensor& out) { run<T>(p, w, u, seed_v, given, images, out); });
}

}  // namespace pygen::pixelrnn
