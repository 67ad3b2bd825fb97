// How an op's autograd Function calls its fused ops: through the dispatcher, and the backward op
// below autograd unless it is itself differentiated.
#pragma once

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>

#include <optional>

namespace pygen {

// The registered op `name` (e.g. "pygen::affine_coupling") with the C++ signature Fn, to call
// through the dispatcher (to the keys below the caller's); keep one of a fixed name in a static.
template <typename Fn>
c10::TypedOperatorHandle<Fn> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Fn>();
}

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
