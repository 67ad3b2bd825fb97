// Inputs the kernels read as rows where they lie. A kernel that walks rows of contiguous elements
// at a constant stride takes, without a copy, a chunk along a dimension of a stacked tensor (a
// conditioner's or an encoder's output split in two), a slice of a batch, or one row expanded
// over the batch (stride 0).
#pragma once

#include <ATen/ATen.h>

namespace pygen {

// t when its dimensions from `row_dim` on are contiguous (one row) and those before it collapse
// into rows a constant stride apart; else a contiguous copy. *stride gets the elements from one
// row to the next (the row's length where there is a single row).
inline at::Tensor rows_in_place(const at::Tensor& t, int64_t row_dim, int64_t* stride) {
  bool rows = t.numel() > 0;
  int64_t row_len = 1;
  for (int64_t d = t.dim() - 1; d >= row_dim; --d) {
    rows = rows && (t.size(d) == 1 || t.stride(d) == row_len);
    row_len *= t.size(d);
  }
  int64_t row_stride = row_len, rows_inside = 1;  // rows spanned by the dimensions after d
  for (int64_t d = row_dim - 1; d >= 0; --d) {
    if (t.size(d) != 1) {
      if (rows_inside == 1) row_stride = t.stride(d);  // the innermost batch dimension sets it
      else rows = rows && t.stride(d) == row_stride * rows_inside;
    }
    rows_inside *= t.size(d);
  }
  *stride = rows ? row_stride : row_len;
  return rows ? t : t.contiguous();
}

}  // namespace pygen
