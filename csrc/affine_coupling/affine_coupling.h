// Fused affine coupling with its log-determinant. With s = f(log_scale) and mask m (1 = pass through):
//   forward: y = m * x + (1 - m) * (x * exp(s) + shift),      logdet[n] =  sum_{m = 0} s
//   reverse: y = m * x + (1 - m) * ((x - shift) * exp(-s)),   logdet[n] = -sum_{m = 0} s
// No log_scale is the additive (NICE) coupling: s = 0, logdet = 0.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

#include "affine_coupling/scale.h"

namespace pygen::affine_coupling {

// How the kernels know the mask. kRead reads a uint8 mask; the others compute it from indices:
// checkerboard keeps (h + w + parity) even over the last two dimensions (the last one for
// vectors), channel keeps the first C/2 channels of dimension 1 (parity 0) or the others.
enum class MaskKind : int { kRead, kCheckerboard, kChannel };

// Shapes and settings seen by the kernels. A sample (row) is row_len contiguous elements (in NHWC
// order for an x stored channels-last): of x, y and grad_x one row after the other; of log_scale
// and shift rows that may lie further apart (chunks of a conditioner's stacked output, read where
// they lie), as of their gradients (the halves of one stacked gradient). A row of these four is
// runs of param_run contiguous elements param_run_stride apart: one run of row_len, but for the
// stacked params of a channels-last x, whose pixels hold C log_scales then C shifts (runs of C, 2C
// apart).
struct Problem {
  int64_t rows, row_len;
  ScaleFn scale_fn;
  double clamp;
  bool reverse;
  MaskKind mask_kind;
  int64_t parity;
  int64_t width, height;    // checkerboard: line length and lines per plane
  int64_t split;            // channel: the first `split` elements of a row are the first half
  int64_t mask_row_stride;  // read: 0 when every sample shares the mask, row_len otherwise
  int64_t log_scale_stride, shift_stride;  // elements from a sample's row to the next one's
  int64_t param_grad_stride;  // the same for grad_log_scale and grad_shift
  int64_t param_run, param_run_stride;
};

// The scale function called `name` (kNone, the additive coupling, without a log_scale) and the
// clamp it uses (the default 2 for tanh and atan when none is given, 0 for the others); a bad name
// or clamp is a ValueError. Shared with the MADE solve (made_solve/).
ScaleFn parse_scale_fn(bool has_log_scale, c10::string_view name);
double parse_clamp(ScaleFn f, std::optional<double> clamp);

// mask_kind: 0 read, 1/2 checkerboard with parity 0/1, 3/4 channel with parity 0/1 (the codes of
// pygen.ops.MaskKind). Returns y and logdet (float32 for 16-bit inputs).
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const std::optional<at::Tensor>& log_scale,
                                           const at::Tensor& shift, const at::Tensor& mask, int64_t mask_kind,
                                           c10::string_view scale_fn, std::optional<double> clamp,
                                           bool reverse);

// Returns grad_x, grad_log_scale (empty for the additive coupling) and grad_shift.
std::tuple<at::Tensor, at::Tensor, at::Tensor> backward(
    const std::optional<at::Tensor>& grad_y, const std::optional<at::Tensor>& grad_logdet, const at::Tensor& x,
    const std::optional<at::Tensor>& log_scale, const at::Tensor& shift, const at::Tensor& mask,
    int64_t mask_kind, c10::string_view scale_fn, std::optional<double> clamp, bool reverse);

// The same with log_scale and shift the halves of dim 1 of one tensor `params` (N, 2C, ...), a
// conditioner's stacked output, for x (N, C, ...); backward returns grad_x and grad_params, written
// by the kernels as one tensor (not two that autograd would concatenate).
std::tuple<at::Tensor, at::Tensor> forward_stacked(const at::Tensor& x, const at::Tensor& params,
                                                   const at::Tensor& mask, int64_t mask_kind,
                                                   c10::string_view scale_fn, std::optional<double> clamp,
                                                   bool reverse);
std::tuple<at::Tensor, at::Tensor> backward_stacked(const std::optional<at::Tensor>& grad_y,
                                                    const std::optional<at::Tensor>& grad_logdet,
                                                    const at::Tensor& x, const at::Tensor& params,
                                                    const at::Tensor& mask, int64_t mask_kind,
                                                    c10::string_view scale_fn, std::optional<double> clamp,
                                                    bool reverse);

// Device kernels. Tensors are contiguous but for the row strides and runs of log_scale, shift and
// their gradients; log_scale is undefined for kNone, mask for kinds other than kRead (then it is uint8);
// grad_y and grad_logdet are always given.
void forward_cpu(const Problem& p, const at::Tensor& x, const at::Tensor& log_scale, const at::Tensor& shift,
                 const at::Tensor& mask, at::Tensor& y, at::Tensor& logdet);
void backward_cpu(const Problem& p, const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                  const at::Tensor& log_scale, const at::Tensor& shift, const at::Tensor& mask,
                  at::Tensor& grad_x, at::Tensor& grad_log_scale, at::Tensor& grad_shift);
#ifdef PYGEN_WITH_CUDA
void forward_cuda(const Problem& p, const at::Tensor& x, const at::Tensor& log_scale, const at::Tensor& shift,
                  const at::Tensor& mask, at::Tensor& y, at::Tensor& logdet);
void backward_cuda(const Problem& p, const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                   const at::Tensor& log_scale, const at::Tensor& shift, const at::Tensor& mask,
                   at::Tensor& grad_x, at::Tensor& grad_log_scale, at::Tensor& grad_shift);
#endif

}  // namespace pygen::affine_coupling
