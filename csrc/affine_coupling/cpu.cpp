// CPU kernels: samples split across threads; each sample is cut into spans over which the mask is
// known in closed form (all kept, all transformed) or read, and every span is one branch-free
// `omp simd` loop. Kept spans are a copy (forward) or compile down to a copy and zero fills
// (backward): the dead scale math and the log_scale/shift loads are removed by the compiler. A
// checkerboard sample of even width is one span of element pairs, one kept and one transformed,
// so that the scale function runs for the transformed half only; the forward widens 16-bit spans
// into float buffers by chunks, for vectors as wide as float32's.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <bit>

#include "affine_coupling/affine_coupling.h"
#include "common/cpu_convert.h"

namespace pygen::affine_coupling {
namespace {

// The row loops are compiled per instruction set (PYGEN_CPU_CLONES); the span loops are inlined
// into each so that they vectorize at the row loop's width.
// The span loops and the scale function they call are forced inline: GCC stops inlining plain
// `inline` helpers once a row loop has grown, and one out-of-line call per element keeps the loop
// scalar (load_s did so for tanh and sigmoid over channel masks: 20x slower). Forcing the small
// mask helpers too made the checkerboard loops slower (measured), so they stay plain.
#define PYGEN_INLINE inline __attribute__((always_inline))

// kPairs: a span of element pairs whose mask byte says which element is transformed.
enum class Span { kKeep, kTransform, kRead, kPairs };

// Whether element i of a span passes through (kRead reads the mask). Indices are 32-bit (samples
// have fewer than 2^31 elements): 64-bit lanes beside float lanes keep GCC from vectorizing.
template <Span S>
inline bool kept(int32_t i, const uint8_t* mask) {
  if constexpr (S == Span::kKeep) {
    return true;
  } else if constexpr (S == Span::kTransform) {
    return false;
  } else {
    return mask[i] != 0;
  }
}

// keep ? a : b as bit operations: GCC does not if-convert plain selects in these loops.
inline float select(bool keep, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(keep);
  return bits_to_float((float_to_bits(a) & m) | (float_to_bits(b) & ~m));
}

inline double select(bool keep, double a, double b) { return keep ? a : b; }

template <ScaleFn F, typename scalar_t, typename acc_t>
PYGEN_INLINE acc_t load_s(const scalar_t* log_scale, int32_t i, acc_t c, acc_t ic) {
  if constexpr (F == ScaleFn::kNone) {
    return acc_t(0);
  } else {
    return scale_log<F>(widen<acc_t>(log_scale[i]), c, ic);
  }
}

// Pointers of one span: the inputs, the read mask and the outputs.
template <typename scalar_t>
struct Ptrs {
  const scalar_t *x, *log_scale, *shift;
  const uint8_t* mask;
  scalar_t* out;  // forward: y
  const scalar_t* grad_y;  // backward only
  scalar_t *grad_log_scale, *grad_shift;

  Ptrs offset(int64_t k) const {
    auto add = [k](auto* p) { return p ? p + k : p; };
    return {add(x), add(log_scale), add(shift), add(mask), add(out), add(grad_y), add(grad_log_scale),
            add(grad_shift)};
  }

  // The pointers of sample r: each tensor's row at its own stride.
  Ptrs row(const Problem& p, int64_t r) const {
    auto at = [r](auto* q, int64_t stride) { return q ? q + r * stride : q; };
    return {at(x, p.row_len),   at(log_scale, p.log_scale_stride), at(shift, p.shift_stride),
            at(mask, p.mask_row_stride), at(out, p.row_len), at(grad_y, p.row_len),
            at(grad_log_scale, p.param_grad_stride), at(grad_shift, p.param_grad_stride)};
  }
};

// A pair of 16- or 32-bit elements as one word (Value: the same without the attributes). A pair
// loop loads and stores whole words and picks the transformed half with shifts and masks: GCC
// vectorizes the stride-2 element accesses of the plain form 4 floats wide on AVX-512 and loses the
// saving. Words alias the tensors' element type and may sit at an odd element offset, hence
// may_alias and the element's alignment.
template <int kBytes>
struct Pair;
template <>
struct Pair<2> {
  typedef uint32_t Word __attribute__((may_alias, aligned(2)));
  using Value = uint32_t;
  using Bits = uint16_t;
};
template <>
struct Pair<4> {
  typedef uint64_t Word __attribute__((may_alias, aligned(4)));
  using Value = uint64_t;
  using Bits = uint32_t;
};
static_assert(std::endian::native == std::endian::little, "a pair's first element is its low half");

// The element of pair w that sel picks: the high half where sel is all ones, the low half where it
// is zero (the pair loops' sel picks the transformed element).
template <typename scalar_t, typename acc_t, typename U>
PYGEN_INLINE acc_t half_of(U w, U sel) {
  using Bits = typename Pair<sizeof(scalar_t)>::Bits;
  const U half = ((w >> (8 * sizeof(scalar_t))) & sel) | (w & ~sel);
  return widen<acc_t>(std::bit_cast<scalar_t>(static_cast<Bits>(half)));
}

// v stored in the half of a pair that sel picks, zero in the other.
template <typename scalar_t, typename U, typename acc_t>
PYGEN_INLINE U placed(acc_t v, U sel) {
  using Bits = typename Pair<sizeof(scalar_t)>::Bits;
  const U b = std::bit_cast<Bits>(narrow<scalar_t>(v));
  return ((b << (8 * sizeof(scalar_t))) & sel) | (b & ~sel);
}

// The half of pair w that sel does not pick, zero in the other.
template <typename scalar_t, typename U>
PYGEN_INLINE U kept_of(U w, U sel) {
  constexpr U kLow = (U(1) << (8 * sizeof(scalar_t))) - 1;
  return w & (kLow ^ ~sel);
}

// Calls body(begin, end, s_of) over chunks of [0, n), each storing the logs of its items at
// s_of[k - begin], and returns their sum. GCC does not vectorize a float reduction in a loop that
// also loads bytes (a read mask) or 64-bit words ("no vectype"), and where it did, it sized the
// reduction's lane buffer for the float lanes alone (a stack overflow, seen standalone); the forward
// loops therefore keep the sum out, in a plain loop over this buffer.
constexpr int32_t kSumChunk = 256;

template <typename acc_t, typename Body>
PYGEN_INLINE acc_t summed_by_chunks(int32_t n, Body&& body) {
  acc_t sum = 0;
  acc_t s_of[kSumChunk];
  for (int32_t begin = 0, end; begin < n; begin = end) {
    end = begin + std::min(n - begin, kSumChunk);  // begin + kSumChunk could pass INT32_MAX
    body(begin, end, s_of);
#pragma omp simd reduction(+ : sum)
    for (int32_t k = 0; k < end - begin; ++k) sum += s_of[k];
  }
  return sum;
}

// Transforms n pairs; mask[j] is 1 where the second element of pair j is the transformed one.
// Returns the sum of s over the transformed elements.
template <ScaleFn F, bool kReverse, typename scalar_t, typename acc_t>
PYGEN_INLINE acc_t forward_pairs(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t c, acc_t ic) {
  using Word = typename Pair<sizeof(scalar_t)>::Word;
  using U = typename Pair<sizeof(scalar_t)>::Value;
  const Word* __restrict__ x = reinterpret_cast<const Word*>(ptrs.x);
  const Word* __restrict__ log_scale = reinterpret_cast<const Word*>(ptrs.log_scale);
  const Word* __restrict__ shift = reinterpret_cast<const Word*>(ptrs.shift);
  const uint8_t* __restrict__ second = ptrs.mask;
  Word* __restrict__ y = reinterpret_cast<Word*>(ptrs.out);
  return summed_by_chunks<acc_t>(
      n, [&](int32_t begin, int32_t end, acc_t* __restrict__ s_of) __attribute__((always_inline)) {
#pragma omp simd
    for (int32_t j = begin; j < end; ++j) {
      const U sel = U(0) - U(second[j]);
      const U xw = x[j];
      acc_t s = 0;
      if constexpr (F != ScaleFn::kNone) s = scale_log<F>(half_of<scalar_t, acc_t>(U(log_scale[j]), sel), c, ic);
      const acc_t out = coupled<F>(half_of<scalar_t, acc_t>(xw, sel), s,
                                   half_of<scalar_t, acc_t>(U(shift[j]), sel), kReverse);
      y[j] = kept_of<scalar_t>(xw, sel) | placed<scalar_t>(out, sel);
      s_of[j - begin] = s;
    }
  });
}

// The gradients of n pairs, as forward_pairs; gl is the gradient of the sample's logdet.
template <ScaleFn F, bool kReverse, typename scalar_t, typename acc_t>
PYGEN_INLINE void backward_pairs(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t gl, acc_t c, acc_t ic) {
  using Word = typename Pair<sizeof(scalar_t)>::Word;
  using U = typename Pair<sizeof(scalar_t)>::Value;
  const Word* __restrict__ x = reinterpret_cast<const Word*>(ptrs.x);
  const Word* __restrict__ log_scale = reinterpret_cast<const Word*>(ptrs.log_scale);
  const Word* __restrict__ shift = reinterpret_cast<const Word*>(ptrs.shift);
  const uint8_t* __restrict__ second = ptrs.mask;
  const Word* __restrict__ grad_y = reinterpret_cast<const Word*>(ptrs.grad_y);
  Word* __restrict__ grad_x = reinterpret_cast<Word*>(ptrs.out);
  Word* __restrict__ grad_log_scale = reinterpret_cast<Word*>(ptrs.grad_log_scale);
  Word* __restrict__ grad_shift = reinterpret_cast<Word*>(ptrs.grad_shift);
#pragma omp simd
  for (int32_t j = 0; j < n; ++j) {
    const U sel = U(0) - U(second[j]);
    const U gw = grad_y[j];
    const acc_t g = half_of<scalar_t, acc_t>(gw, sel);
    acc_t a = 0, s = 0;
    if constexpr (F != ScaleFn::kNone) {
      a = half_of<scalar_t, acc_t>(U(log_scale[j]), sel);
      s = scale_log<F>(a, c, ic);
    }
    const CoupledGrads<acc_t> d = coupled_grads<F>(g, half_of<scalar_t, acc_t>(U(x[j]), sel), s,
                                                   half_of<scalar_t, acc_t>(U(shift[j]), sel), kReverse);
    grad_x[j] = kept_of<scalar_t>(gw, sel) | placed<scalar_t>(d.x, sel);
    grad_shift[j] = placed<scalar_t>(d.t, sel);
    if constexpr (F != ScaleFn::kNone) {
      const acc_t ds = d.s + (kReverse ? -gl : gl);  // logdet = -sum s (reverse), sum s (forward)
      grad_log_scale[j] = placed<scalar_t>(ds * scale_grad<F>(a, s, ic), sel);
    }
  }
}

// Transforms n elements; returns the sum of s over the transformed ones.
template <ScaleFn F, bool kReverse, Span S, typename scalar_t, typename acc_t>
PYGEN_INLINE acc_t forward_elements(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t c, acc_t ic) {
  const scalar_t* __restrict__ x = ptrs.x;
  const scalar_t* __restrict__ log_scale = ptrs.log_scale;
  const scalar_t* __restrict__ shift = ptrs.shift;
  const uint8_t* __restrict__ mask = ptrs.mask;
  scalar_t* __restrict__ y = ptrs.out;
  return summed_by_chunks<acc_t>(
      n, [&](int32_t begin, int32_t end, acc_t* __restrict__ s_of) __attribute__((always_inline)) {
#pragma omp simd
    for (int32_t i = begin; i < end; ++i) {
      const acc_t xv = widen<acc_t>(x[i]);
      const acc_t t = widen<acc_t>(shift[i]);
      const acc_t s = load_s<F>(log_scale, i, c, ic);
      const acc_t out = coupled<F>(xv, s, t, kReverse);
      const bool keep = kept<S>(i, mask);
      y[i] = narrow<scalar_t>(select(keep, xv, out));
      s_of[i - begin] = select(keep, acc_t(0), s);
    }
  });
}

// Gradients of n elements; gl is the gradient of the sample's logdet.
template <ScaleFn F, bool kReverse, Span S, typename scalar_t, typename acc_t>
PYGEN_INLINE void backward_elements(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t gl, acc_t c, acc_t ic) {
  const scalar_t* __restrict__ x = ptrs.x;
  const scalar_t* __restrict__ log_scale = ptrs.log_scale;
  const scalar_t* __restrict__ shift = ptrs.shift;
  const uint8_t* __restrict__ mask = ptrs.mask;
  const scalar_t* __restrict__ grad_y = ptrs.grad_y;
  scalar_t* __restrict__ grad_x = ptrs.out;
  scalar_t* __restrict__ grad_log_scale = ptrs.grad_log_scale;
  scalar_t* __restrict__ grad_shift = ptrs.grad_shift;
#pragma omp simd
  for (int32_t i = 0; i < n; ++i) {
    const acc_t g = widen<acc_t>(grad_y[i]);
    const acc_t xv = widen<acc_t>(x[i]);
    const acc_t s = load_s<F>(log_scale, i, c, ic);
    const CoupledGrads<acc_t> d = coupled_grads<F>(g, xv, s, widen<acc_t>(shift[i]), kReverse);
    const acc_t ds = d.s + (kReverse ? -gl : gl);  // logdet = -sum s (reverse), sum s (forward)
    const bool keep = kept<S>(i, mask);
    grad_x[i] = narrow<scalar_t>(select(keep, g, d.x));
    grad_shift[i] = narrow<scalar_t>(select(keep, acc_t(0), d.t));
    if constexpr (F != ScaleFn::kNone) {
      const acc_t a = widen<acc_t>(log_scale[i]);
      grad_log_scale[i] = narrow<scalar_t>(select(keep, acc_t(0), ds * scale_grad<F>(a, s, ic)));
    }
  }
}

// The forward over 16-bit elements of a transformed or read span, by chunks widened into float
// buffers: over 16-bit loads GCC runs the float math 8 lanes wide on AVX-512, over the buffers 16
// (as fast as two elements to a 32-bit word, measured, with none of the word's bit picking).
template <ScaleFn F, bool kReverse, Span S, typename scalar_t, typename acc_t>
PYGEN_INLINE acc_t forward_widened(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t c, acc_t ic) {
  alignas(64) acc_t xs[kSumChunk], ls[kSumChunk], ts[kSumChunk], ys[kSumChunk];
  acc_t sum = 0;
  for (int32_t begin = 0; begin < n; begin += kSumChunk) {
    const int32_t m = std::min(kSumChunk, n - begin);
    const Ptrs<scalar_t> p = ptrs.offset(begin);
    const scalar_t* __restrict__ x = p.x;
    const scalar_t* __restrict__ log_scale = p.log_scale;
    const scalar_t* __restrict__ shift = p.shift;
#pragma omp simd
    for (int32_t i = 0; i < m; ++i) {
      xs[i] = widen<acc_t>(x[i]);
      ts[i] = widen<acc_t>(shift[i]);
      if constexpr (F != ScaleFn::kNone) ls[i] = widen<acc_t>(log_scale[i]);
    }
    const Ptrs<acc_t> wide{xs, F == ScaleFn::kNone ? nullptr : ls, ts, p.mask, ys};
    sum += forward_elements<F, kReverse, S>(wide, m, c, ic);
    scalar_t* __restrict__ y = p.out;
#pragma omp simd
    for (int32_t i = 0; i < m; ++i) y[i] = narrow<scalar_t>(ys[i]);
  }
  return sum;
}

// Transforms the n elements of a span (kPairs: n pairs); returns the sum of s over the transformed
// ones. A kept span is a copy; 16-bit read or transformed ones widen by chunks, wider ones run
// element by element.
template <ScaleFn F, bool kReverse, Span S, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
PYGEN_INLINE acc_t forward_span(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t c, acc_t ic) {
  if constexpr (S == Span::kKeep) {
    std::copy_n(ptrs.x, n, ptrs.out);
    return acc_t(0);
  } else if constexpr (S == Span::kPairs) {
    if constexpr (sizeof(scalar_t) <= 4) return forward_pairs<F, kReverse>(ptrs, n, c, ic);
    return acc_t(0);  // not planned: doubles run checkerboards as read spans
  } else if constexpr (sizeof(scalar_t) == 2) {
    return forward_widened<F, kReverse, S>(ptrs, n, c, ic);
  } else {
    return forward_elements<F, kReverse, S>(ptrs, n, c, ic);
  }
}

// The gradients of a span (kPairs: n pairs; otherwise element by element); gl is the gradient of
// the sample's logdet.
template <ScaleFn F, bool kReverse, Span S, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
PYGEN_INLINE void backward_span(const Ptrs<scalar_t>& ptrs, int32_t n, acc_t gl, acc_t c, acc_t ic) {
  if constexpr (S == Span::kPairs) {
    if constexpr (sizeof(scalar_t) <= 4) backward_pairs<F, kReverse>(ptrs, n, gl, c, ic);
  } else {
    backward_elements<F, kReverse, S>(ptrs, n, gl, c, ic);
  }
}

// Walks the spans of one sample, calling span(Span tag, ptrs, n) on each; returns the sum of what
// the calls return. A checkerboard comes here planned (see plan): as pairs over a pattern.
template <typename scalar_t, typename acc_t, typename SpanFn>
PYGEN_INLINE acc_t over_spans(const Problem& p, const Ptrs<scalar_t>& row, SpanFn&& span) {
  using K = std::integral_constant<Span, Span::kKeep>;
  using T = std::integral_constant<Span, Span::kTransform>;
  using R = std::integral_constant<Span, Span::kRead>;
  using P = std::integral_constant<Span, Span::kPairs>;
  const auto row_len = static_cast<int32_t>(p.row_len), split = static_cast<int32_t>(p.split);
  switch (p.mask_kind) {
    case MaskKind::kChannel: {
      const Ptrs<scalar_t> second = row.offset(split);
      if (p.parity == 0) return span(K{}, row, split) + span(T{}, second, row_len - split);
      return span(T{}, row, split) + span(K{}, second, row_len - split);
    }
    case MaskKind::kCheckerboard:
      return span(P{}, row, row_len / 2);
    case MaskKind::kRead:
      return span(R{}, row, row_len);
  }
  return acc_t(0);
}

// Rows whose log_scale and shift lie in runs (Problem::param_run: a channels-last x's stacked params)
// go by chunks: the chunk's log_scale and shift gathered into buffers, run as a read span (such an
// x's mask is read) and, backward, their gradients scattered from buffers. The buffers stay in L1:
// memory sees the bytes it would without runs, but a run of a pixel's few channels per copy costs
// (256x12x32x32 float32: forward 2.3 ms against 1.75 from two channels-last tensors).
constexpr int32_t kStage = 512;

// Elements [begin, begin + n) of a row in runs, copied to flat (gather) or from it (scatter): one
// division per call, not one per run (with one per run of 12 channels the forward took 3.2 ms).
template <bool kGather, typename scalar_t, typename runs_t>
PYGEN_INLINE void copy_runs(const Problem& p, runs_t* runs, int32_t begin, int32_t n, scalar_t* flat) {
  int64_t in_run = begin % p.param_run;
  runs_t* run = runs + (begin / p.param_run) * p.param_run_stride;
  for (int32_t i = 0; i < n; run += p.param_run_stride, in_run = 0) {
    const auto len = static_cast<int32_t>(std::min<int64_t>(p.param_run - in_run, n - i));
    if constexpr (kGather) {
      std::copy_n(run + in_run, len, flat + i);
    } else {
      std::copy_n(flat + i, len, run + in_run);
    }
    i += len;
  }
}

// The pointers of the n elements at `begin` of a row in runs, its log_scale and shift gathered into
// the buffers.
template <ScaleFn F, typename scalar_t>
PYGEN_INLINE Ptrs<scalar_t> gathered(const Problem& p, const Ptrs<scalar_t>& row, int32_t begin, int32_t n,
                                     scalar_t* log_scale, scalar_t* shift) {
  Ptrs<scalar_t> chunk = row.offset(begin);
  if constexpr (F != ScaleFn::kNone) copy_runs<true>(p, row.log_scale, begin, n, log_scale);
  copy_runs<true>(p, row.shift, begin, n, shift);
  chunk.log_scale = F == ScaleFn::kNone ? nullptr : log_scale;
  chunk.shift = shift;
  return chunk;
}

// The forward of a row in runs; returns the sum of s over its transformed elements.
template <ScaleFn F, bool kReverse, typename scalar_t, typename acc_t>
PYGEN_INLINE acc_t forward_runs(const Problem& p, const Ptrs<scalar_t>& row, acc_t c, acc_t ic) {
  scalar_t log_scale[kStage], shift[kStage];
  acc_t sum = 0;
  for (int32_t begin = 0; begin < p.row_len; begin += kStage) {
    const auto n = static_cast<int32_t>(std::min<int64_t>(kStage, p.row_len - begin));
    sum += forward_span<F, kReverse, Span::kRead>(gathered<F>(p, row, begin, n, log_scale, shift), n, c, ic);
  }
  return sum;
}

// The gradients of a row in runs; gl is the gradient of its logdet.
template <ScaleFn F, bool kReverse, typename scalar_t, typename acc_t>
PYGEN_INLINE void backward_runs(const Problem& p, const Ptrs<scalar_t>& row, acc_t gl, acc_t c, acc_t ic) {
  scalar_t log_scale[kStage], shift[kStage], grad_log_scale[kStage], grad_shift[kStage];
  for (int32_t begin = 0; begin < p.row_len; begin += kStage) {
    const auto n = static_cast<int32_t>(std::min<int64_t>(kStage, p.row_len - begin));
    Ptrs<scalar_t> chunk = gathered<F>(p, row, begin, n, log_scale, shift);
    chunk.grad_log_scale = grad_log_scale;
    chunk.grad_shift = grad_shift;
    backward_span<F, kReverse, Span::kRead>(chunk, n, gl, c, ic);
    if constexpr (F != ScaleFn::kNone) copy_runs<false>(p, row.grad_log_scale, begin, n, grad_log_scale);
    copy_runs<false>(p, row.grad_shift, begin, n, grad_shift);
  }
}

// ~32k elements per task.
int64_t grain_rows(const Problem& p) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, p.row_len)); }

// The row loops live in plain functions, outside the parallel_for lambda, where GCC vectorizes
// them (inside the OpenMP-outlined lambda it does not).
template <ScaleFn F, bool kReverse, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
PYGEN_CPU_CLONES void forward_rows(const Problem& p, const Ptrs<scalar_t>& base, acc_t* logdet, int64_t begin, int64_t end) {
  const acc_t c = static_cast<acc_t>(p.clamp), ic = p.clamp > 0 ? acc_t(1) / c : acc_t(0);
  for (int64_t r = begin; r < end; ++r) {
    const Ptrs<scalar_t> row = base.row(p, r);
    const acc_t sum =
        p.param_run != p.row_len
            ? forward_runs<F, kReverse>(p, row, c, ic)
            : over_spans<scalar_t, acc_t>(
                  p, row, [&](auto tag, const Ptrs<scalar_t>& ptrs, int32_t n) __attribute__((always_inline)) {
                    return forward_span<F, kReverse, decltype(tag)::value>(ptrs, n, c, ic);
                  });
    logdet[r] = kReverse ? -sum : sum;
  }
}

template <ScaleFn F, bool kReverse, typename scalar_t, typename acc_t = at::opmath_type<scalar_t>>
PYGEN_CPU_CLONES void backward_rows(const Problem& p, const Ptrs<scalar_t>& base, const acc_t* grad_logdet, int64_t begin,
                   int64_t end) {
  const acc_t c = static_cast<acc_t>(p.clamp), ic = p.clamp > 0 ? acc_t(1) / c : acc_t(0);
  for (int64_t r = begin; r < end; ++r) {
    const Ptrs<scalar_t> row = base.row(p, r);
    const acc_t gl = grad_logdet[r];
    if (p.param_run != p.row_len) {
      backward_runs<F, kReverse>(p, row, gl, c, ic);
      continue;
    }
    over_spans<scalar_t, acc_t>(p, row, [&](auto tag, const Ptrs<scalar_t>& ptrs, int32_t n) __attribute__((always_inline)) {
      backward_span<F, kReverse, decltype(tag)::value>(ptrs, n, gl, c, ic);
      return acc_t(0);
    });
  }
}

template <typename scalar_t>
const scalar_t* ptr_or_null(const at::Tensor& t) {
  return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr;
}

template <typename scalar_t>
scalar_t* mutable_or_null(at::Tensor& t) {
  return t.numel() > 0 ? t.mutable_data_ptr<scalar_t>() : nullptr;
}

// Calls fn(F, reverse) with both as compile-time constants.
template <typename Fn>
void with_variant(const Problem& p, Fn&& fn) {
  with_scale_fn(p.scale_fn, [&](auto f) {
    if (p.reverse) {
      fn(f, std::true_type{});
    } else {
      fn(f, std::false_type{});
    }
  });
}

// What the row loops run: the problem itself, or for a checkerboard a pattern shared by every sample
// (`pattern`) in place of the mask. With an even width and 16- or 32-bit elements the checkerboard
// runs as pairs (row_len / 2 bytes, 1 where a pair's second element is transformed), otherwise as a
// read mask (row_len bytes, 1 = kept): one span per sample, as a span per line of a few elements
// leaves the vector loop to its scalar remainder (8-wide lines ran 4x slower per element than
// 16-wide ones, measured).
struct CpuPlan {
  Problem p;
  at::Tensor pattern;
};

CpuPlan plan(const Problem& p, bool pairs) {
  if (p.mask_kind != MaskKind::kCheckerboard) return {p, at::Tensor()};
  // Element i sits on line (i / width) % height, column i % width; kept where both and the parity
  // add up to an even number.
  const auto kept = [&p](int64_t i) { return (((i / p.width) % p.height + i % p.width + p.parity) & 1) == 0; };
  Problem run = p;
  run.mask_row_stride = 0;
  if (pairs && p.width % 2 == 0) {  // a pair lies on one line: one element kept, the other not
    at::Tensor pattern = at::empty({p.row_len / 2}, at::TensorOptions().dtype(at::kByte));
    uint8_t* second = pattern.mutable_data_ptr<uint8_t>();
    for (int64_t j = 0; j < p.row_len / 2; ++j) second[j] = kept(2 * j);
    return {run, pattern};
  }
  at::Tensor pattern = at::empty({p.row_len}, at::TensorOptions().dtype(at::kByte));
  uint8_t* keep = pattern.mutable_data_ptr<uint8_t>();
  for (int64_t i = 0; i < p.row_len; ++i) keep[i] = kept(i);
  run.mask_kind = MaskKind::kRead;
  return {run, pattern};
}

const uint8_t* mask_of(const CpuPlan& run, const at::Tensor& mask) {
  return run.pattern.defined() ? run.pattern.const_data_ptr<uint8_t>() : ptr_or_null<uint8_t>(mask);
}

}  // namespace

void forward_cpu(const Problem& p, const at::Tensor& x, const at::Tensor& log_scale, const at::Tensor& shift,
                 const at::Tensor& mask, at::Tensor& y, at::Tensor& logdet) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const CpuPlan run = plan(p, sizeof(scalar_t) <= 4);
    const Ptrs<scalar_t> base{x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(log_scale),
                              shift.const_data_ptr<scalar_t>(), mask_of(run, mask),
                              y.mutable_data_ptr<scalar_t>(), nullptr, nullptr, nullptr};
    acc_t* logdet_p = logdet.mutable_data_ptr<acc_t>();
    with_variant(p, [&](auto f, auto reverse) {
      at::parallel_for(0, p.rows, grain_rows(p), [&](int64_t begin, int64_t end) {
        forward_rows<decltype(f)::value, decltype(reverse)::value>(run.p, base, logdet_p, begin, end);
      });
    });
  });
}

void backward_cpu(const Problem& p, const at::Tensor& grad_y, const at::Tensor& grad_logdet, const at::Tensor& x,
                  const at::Tensor& log_scale, const at::Tensor& shift, const at::Tensor& mask,
                  at::Tensor& grad_x, at::Tensor& grad_log_scale, at::Tensor& grad_shift) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "affine_coupling_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const CpuPlan run = plan(p, sizeof(scalar_t) <= 4);
    const Ptrs<scalar_t> base{x.const_data_ptr<scalar_t>(), ptr_or_null<scalar_t>(log_scale),
                              shift.const_data_ptr<scalar_t>(),    mask_of(run, mask),
                              grad_x.mutable_data_ptr<scalar_t>(), grad_y.const_data_ptr<scalar_t>(),
                              mutable_or_null<scalar_t>(grad_log_scale), grad_shift.mutable_data_ptr<scalar_t>()};
    const acc_t* grad_logdet_p = grad_logdet.const_data_ptr<acc_t>();
    with_variant(p, [&](auto f, auto reverse) {
      at::parallel_for(0, p.rows, grain_rows(p), [&](int64_t begin, int64_t end) {
        backward_rows<decltype(f)::value, decltype(reverse)::value>(run.p, base, grad_logdet_p, begin, end);
      });
    });
  });
}

}  // namespace pygen::affine_coupling
