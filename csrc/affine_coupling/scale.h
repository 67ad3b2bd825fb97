// The scale functions of the coupling, shared by the CPU and CUDA kernels: s = f(log_scale) is the
// log of the factor applied to the transformed half, ds/dlog_scale its derivative.
#pragma once

#include <type_traits>

#include "common/math.h"

namespace pygen::affine_coupling {

// kNone is the additive (NICE) coupling: no log_scale, s = 0.
enum class ScaleFn : int { kNone, kExp, kTanh, kAtan, kSigmoid };

// s = f(a); c is the clamp and ic its inverse (used by tanh and atan only).
template <ScaleFn F, typename T>
PYGEN_HD T scale_log(T a, T c, T ic) {
  if constexpr (F == ScaleFn::kNone) {
    return T(0);
  } else if constexpr (F == ScaleFn::kExp) {
    return a;
  } else if constexpr (F == ScaleFn::kTanh) {
    return c * fast_tanh(a * ic);
  } else if constexpr (F == ScaleFn::kAtan) {
    return c * T(0.636619772367581343) * fast_atan(a * ic);  // c * (2 / pi) * atan(a / c)
  } else {
    return log_sigmoid(a + T(2));  // Glow: scale = sigmoid(a + 2)
  }
}

// The transformed value of x given s = f(a) and the shift t: forward x * exp(s) + t, reverse
// (x - t) * exp(-s).
template <ScaleFn F, typename T>
PYGEN_HD T coupled(T x, T s, T t, bool reverse) {
  const T e = F == ScaleFn::kNone ? T(1) : fast_exp(reverse ? -s : s);
  return reverse ? (x - t) * e : x * e + t;
}

// The gradients of o = coupled(x, s, t, reverse) given the gradient g of o: of x, of s (before the
// scale function's derivative) and of t.
template <typename T>
struct CoupledGrads {
  T x, s, t;
};

template <ScaleFn F, typename T>
PYGEN_HD CoupledGrads<T> coupled_grads(T g, T x, T s, T t, bool reverse) {
  const T e = F == ScaleFn::kNone ? T(1) : fast_exp(reverse ? -s : s);
  const T ge = grad_times(g, e);  // no gradient of o: none of x, s or t, even where e overflows
  if (reverse) return {ge, -grad_times(g, (x - t) * e), -ge};  // o = (x - t) * exp(-s)
  return {ge, grad_times(g * x, e), g};                        // o = x * exp(s) + t
}

// ds/da given a and s = f(a).
template <ScaleFn F, typename T>
PYGEN_HD T scale_grad(T a, T s, T ic) {
  if constexpr (F == ScaleFn::kNone) {
    return T(0);
  } else if constexpr (F == ScaleFn::kExp) {
    return T(1);
  } else if constexpr (F == ScaleFn::kTanh) {
    const T u = s * ic;  // tanh(a / c)
    return T(1) - u * u;
  } else if constexpr (F == ScaleFn::kAtan) {
    const T u = a * ic;
    return T(0.636619772367581343) / (T(1) + u * u);
  } else {
    return T(1) - fast_exp(s);  // 1 - sigmoid(a + 2)
  }
}

// Calls fn(std::integral_constant<ScaleFn, F>{}) with the compile-time F equal to f.
template <typename Fn>
void with_scale_fn(ScaleFn f, Fn&& fn) {
  switch (f) {
    case ScaleFn::kNone: return fn(std::integral_constant<ScaleFn, ScaleFn::kNone>{});
    case ScaleFn::kExp: return fn(std::integral_constant<ScaleFn, ScaleFn::kExp>{});
    case ScaleFn::kTanh: return fn(std::integral_constant<ScaleFn, ScaleFn::kTanh>{});
    case ScaleFn::kAtan: return fn(std::integral_constant<ScaleFn, ScaleFn::kAtan>{});
    case ScaleFn::kSigmoid: return fn(std::integral_constant<ScaleFn, ScaleFn::kSigmoid>{});
  }
}

}  // namespace pygen::affine_coupling
