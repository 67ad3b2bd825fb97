// Cached incremental sampling of a Gated PixelCNN (Ramachandran et al. 2017): one call runs every
// generation step. Per image row the vertical stack runs once for the whole row (it sees rows above
// only); per value the horizontal stack and the head run at that pixel only, from rolling buffers
// of the rows each layer's kernel reaches; then softmax(logits / temperature) and the inverse-CDF
// draw with a given uniform or Philox uniform ((b * C + c) * H + i) * W + j of `seed`, except where
// the caller gives the value's level (a completion: those values are kept, the rest conditioned on
// them).
// The weight layout is documented in pygen/sampling/weights.py; the PyTorch twin of this kernel is
// pygen/sampling/cached.py.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>
#include <vector>

namespace pygen::pixelcnn {

// Index of each tensor of a gated layer in the flat weight list, and the sizes of the lists.
enum LayerWeight { kVW, kVB, kHW, kHB, kLinkW, kOutW, kOutB };
enum HeadWeight { kW1, kB1, kW2, kB2 };
constexpr int64_t kPerLayer = 7, kHead = 4;

struct Problem {
  int64_t batch, channels, height, width, levels, hidden, kernel, layers;
  double temperature;
  bool return_logits;
};

// Returns (images int64 (B, C, H, W), logits (B, L, C, H, W) or an empty tensor).
std::tuple<at::Tensor, at::Tensor> sample(at::TensorList weights,
                                          const std::optional<at::Tensor>& noise,
                                          const std::optional<at::Tensor>& seed,
                                          const std::optional<at::Tensor>& given, int64_t batch,
                                          int64_t channels, int64_t height, int64_t width,
                                          int64_t n_levels, int64_t kernel_size, double temperature,
                                          bool return_logits);

// How the CUDA row kernels run: samples per block (block kernel) or per cluster (cluster kernel),
// the blocks per cluster (1: the block kernel), whether the cluster kernel keeps its weight slices
// in shared memory, the shared memory a block takes and the device's limit. The caller raises the
// block kernel's shared-memory error with the other argument checks; a cluster size forced through
// PYGEN_PIXELCNN_CLUSTER that cannot run raises here.
struct RowPlan {
  int64_t samples, smem_bytes, smem_limit;
  int64_t cluster = 1;
  bool resident = false;
  bool fused_link = false;  // the vertical stack's bias, gate and link product in one kernel
  bool folded = false;      // the cluster kernel with output products folded into gate products
  bool tensor_cores = false;  // the cluster kernel's products on tensor cores (groups of 16)
};
RowPlan plan_cuda_rows(const Problem& p, const at::Tensor& ref);

// Device kernels. Weights, noise and given are contiguous; noise is undefined when the seed is
// used, given when every value is drawn; given_rows[i] != 0: row i is given whole, its horizontal
// stack skipped (pixelcnn.cpp).
void sample_cpu(const Problem& p, const std::vector<at::Tensor>& weights, const at::Tensor& noise,
                const at::Tensor& seed, const at::Tensor& given,
                const std::vector<uint8_t>& given_rows, at::Tensor& images, at::Tensor& logits);
void sample_cuda(const Problem& p, const RowPlan& plan, const std::vector<at::Tensor>& weights,
                 const at::Tensor& noise, const at::Tensor& seed, const at::Tensor& given,
                 const std::vector<uint8_t>& given_rows, at::Tensor& images, at::Tensor& logits);

}  // namespace pygen::pixelcnn
