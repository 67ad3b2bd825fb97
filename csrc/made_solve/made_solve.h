// The D-step solve of an autoregressive affine flow (MAF sampling, IAF density) through a MADE:
// x[:, d] = affine(target[:, d], MADE(x)[:, :, d]) in the MADE's order. See made_solve.cpp for the
// operators and pygen/ops/made_solve.py for the contract.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "affine_coupling/scale.h"

namespace pygen::made_solve {

// What the fused kernel reads, checked and converted by the op: the MADE's masked weights[i]
// (out, in) as nn.Linear holds them and biases[i] (out), contiguous in the accumulation type
// (float for 16-bit targets); every hidden layer has `hidden` units, units[bounds[m - 1]:bounds[m]]
// being those of degree m; the last layer's row k * dim + d is output k (log-scale, shift) of
// input d.
// A range [lo, hi) of indices.
struct Span {
  int64_t lo = 0, hi = 0;
};

struct Solve {
  int64_t rows, dim, hidden;
  std::vector<at::Tensor> weights, biases;
  std::vector<int64_t> units, bounds, order;
  // At step m, the indices holding every value computed so far: of the inputs filled before it
  // (order[:m]) and of the hidden units of degree <= m (units[:bounds[m]]). Values outside are
  // zero, so products need only read inside (for MAF's orders and hidden < dim, about half).
  std::vector<Span> filled, computed;
  std::vector<uint8_t> keep;  // mask != 0: the input passes through
  affine_coupling::ScaleFn scale_fn;
  double clamp;
  bool reverse;
};

// Writes x (rows, dim) and params (rows, 2, dim), contiguous, in the target's dtype.
void solve_cpu(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params);
void solve_cuda(const Solve& s, const at::Tensor& target, at::Tensor& x, at::Tensor& params);

// The sequential part of the backward, the same algorithm on each device (the weights' and
// biases' gradients then follow from products over all samples: made_solve.cpp). From the
// gradients of x and params (either may be undefined: zero), the forward's target and params and
// the MADE's hidden activations at x (acts: (L - 1, rows, hidden), contiguous, accumulation type),
// writes grad_target (like target), and the gradients of every hidden unit's pre-activation
// g_units (like acts) and of the outputs g_out (rows, 2 D) (accumulation type, zeros on entry).
void solve_backward_cpu(const Solve& s, const at::Tensor& grad_x, const at::Tensor& grad_params,
                        const at::Tensor& target, const at::Tensor& params, const at::Tensor& acts,
                        at::Tensor& grad_target, at::Tensor& g_units, at::Tensor& g_out);
void solve_backward_cuda(const Solve& s, const at::Tensor& grad_x, const at::Tensor& grad_params,
                         const at::Tensor& target, const at::Tensor& params, const at::Tensor& acts,
                         at::Tensor& grad_target, at::Tensor& g_units, at::Tensor& g_out);

// Zeroes entry (row, v) of t (out, in), contiguous, float or double, where available[v] > step[row]
// (int64 vectors on the CPU): the entries of a weight the solve does not read (made_solve.cpp).
void zero_unread_cpu(at::Tensor& t, const at::Tensor& available, const at::Tensor& step);

}  // namespace pygen::made_solve
