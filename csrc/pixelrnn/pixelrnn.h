// Cached PixelRNN sampling (van den Oord et al. 2016) in one call: Row LSTM or Diagonal BiLSTM
// layers, every generation step in C++. Per image row, each layer's recurrence from the row above
// runs once for the whole row; per value, each layer computes only the column being drawn, then
// the head, softmax(logits / temperature) and the inverse-CDF draw with a given uniform or Philox
// uniform ((b * C + c) * H + i) * W + j of `seed`, except where the caller gives the value's level
// (a completion: those values are kept, the rest conditioned on them). The PyTorch twin, which documents the
// algorithm step by step, is pygen/sampling/pixelrnn.py; the weight layout is documented at its
// export_pixelrnn_weights.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace pygen::pixelrnn {

// Index of each tensor in the flat weight list: the input convolution first, then per layer, then
// the head. A direction (Row LSTM, or one of the Diagonal BiLSTM's two) is its input-to-state and
// state-to-state weights and biases; the right-to-left one adds the image-to-state pair.
enum InputWeight { kInW, kInB };
enum DirectionWeight { kIsW, kIsB, kSsW, kSsB };
enum ExtraWeight { kExW = 4, kExB };
enum HeadWeight { kW1, kB1, kW2, kB2 };
constexpr int64_t kInput = 2, kDirection = 4, kExtra = 2, kOut = 2, kHead = 4;
constexpr int64_t kRowLayer = kDirection + kOut;
constexpr int64_t kDiagonalLayer = 2 * kDirection + kExtra + kOut;

struct Problem {
  bool diagonal;
  int64_t batch, channels, height, width, levels, hidden, kernel, row_kernel, layers;
  double temperature;
  bool return_logits;
};

// Returns (images int64 (B, C, H, W), logits (B, L, C, H, W) or an empty tensor).
std::tuple<at::Tensor, at::Tensor> sample(at::TensorList weights,
                                          const std::optional<at::Tensor>& noise,
                                          const std::optional<at::Tensor>& seed,
                                          const std::optional<at::Tensor>& given,
                                          c10::string_view kind, int64_t batch, int64_t channels,
                                          int64_t height, int64_t width, int64_t n_levels,
                                          int64_t kernel_size, double temperature,
                                          bool return_logits);

// Device kernels. Weights, noise and given are contiguous; noise is undefined when the seed is
// used, given when every value is drawn.
void sample_cpu(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                const at::Tensor& seed, const at::Tensor& given, at::Tensor& images,
                at::Tensor& logits);
void sample_cuda(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                 const at::Tensor& seed, const at::Tensor& given, at::Tensor& images,
                 at::Tensor& logits);

}  // namespace pygen::pixelrnn
