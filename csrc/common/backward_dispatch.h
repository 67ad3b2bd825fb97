// How an op's autograd Function calls its fused backward op.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <c10/core/GradMode.h>

#include <optional>

namespace pygen {

// In scope while a Function's backward calls its backward op: the call goes straight to the
// kernel (below autograd), unless the backward is itself being differentiated (create_graph,
// which leaves grad mode on): then it goes through the backward op's autograd, registered in
// Python (pygen/ops/_higher_order.py), which differentiates the op's pure-PyTorch twin.
class BackwardDispatch {
 public:
  BackwardDispatch() {
    if (!c10::GradMode::is_enabled()) below_.emplace();
  }

 private:
  std::optional<at::AutoDispatchBelowADInplaceOrView> below_;
};

}  // namespace pygen
