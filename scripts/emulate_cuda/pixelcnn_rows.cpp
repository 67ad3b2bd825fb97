// The CUDA PixelCNN sampler's host loop (run() in csrc/pixelcnn/cuda.cu) over its kernels
// emulated on CPU threads (shim.h); scripts/emulate_cuda.py compiles it after the kernels' code.
// The vertical stack's convolution and link product (cuDNN and cuBLAS on the GPU) are plain loops.
// Usage: pixelcnn_rows INPUT OUTPUT. INPUT: int64 header (see Header), float64 temperature, then
// for each weight in the export order, the noise and the given levels (empty: none): int64 count,
// float64 values. OUTPUT: the images (int64) and the logits (float64, when asked for).
#include <stdexcept>

#include "driver_io.h"

namespace pp = pygen::pixelcnn;

struct Header {
  int64_t batch, channels, height, width, levels, hidden, kernel, layers, seed, return_logits;
  int64_t cluster, samples, resident, fused_link, folded, tensor_cores, dtype;  // cluster 1: block kernel
};

template <typename T>
void run(const Header& hd, double temperature, const std::vector<std::vector<double>>& weights_in,
         const std::vector<double>& noise_in, const std::vector<int64_t>& given,
         std::vector<int64_t>& images, std::vector<double>& logits_out) {
  using A = at::opmath_type<T>;
  const int64_t bsz = hd.batch, width = hd.width, h = hd.hidden, h2 = 2 * h, pad = hd.kernel / 2;
  const int64_t kh = pad + 1, wv = width + 2 * pad, n_pix = bsz * width;
  const int64_t cc = hd.channels, k = hd.kernel;
  const double scale = 2.0 / static_cast<double>(hd.levels - 1);  // as run() passes it
  std::vector<std::vector<T>> w;
  for (const auto& v : weights_in) w.emplace_back(v.begin(), v.end());
  // Output-major copies, as run() makes them: (rows, cols) -> (cols, rows).
  auto transpose = [](const std::vector<T>& m, int64_t r, int64_t c) {
    std::vector<T> t(m.size());
    for (int64_t i = 0; i < r; ++i)
      for (int64_t j = 0; j < c; ++j) t[j * r + i] = m[i * c + j];
    return t;
  };
  // Folded: the gate weights of layers 1.. and the fold biases from fold_gate_kernel.
  std::vector<T> fold_bias(hd.layers * h2, T(0));
  for (int64_t l = 0; l < hd.layers; ++l) {
    const int64_t cin = l == 0 ? cc : h;
    if (hd.folded != 0 && l > 0) {
      std::vector<T> gate(h2 * (kh + 1) * h);
      emu::launch_flat(h2 * ((kh + 1) * h + 1), pp::kThreads, pp::fold_gate_kernel<T>,
                       static_cast<const T*>(w[l * pp::kPerLayer + pp::kHW].data()),
                       static_cast<const T*>(w[(l - 1) * pp::kPerLayer + pp::kOutW].data()),
                       static_cast<const T*>(w[(l - 1) * pp::kPerLayer + pp::kOutB].data()), gate.data(),
                       fold_bias.data() + l * h2, static_cast<int>(kh), static_cast<int>(h));
      w.push_back(gate);
    } else {
      w.push_back(transpose(w[l * pp::kPerLayer + pp::kHW], kh * cin, h2));
    }
    w.push_back(transpose(w[l * pp::kPerLayer + pp::kOutW], h, h));
  }
  const int64_t head = hd.layers * pp::kPerLayer;
  w.push_back(transpose(w[head + pp::kW1], h, h));
  w.push_back(transpose(w[head + pp::kW2], h, cc * hd.levels));
  if (hd.folded != 0) w.push_back(fold_bias);
  std::vector<const T*> table;
  for (const auto& v : w) table.push_back(v.data());
  const T* const* wt_t = table.data() + weights_in.size();

  std::vector<T> noise(noise_in.begin(), noise_in.end()), logits;
  if (hd.return_logits) logits.assign(bsz * hd.levels * cc * hd.height * width, T(0));
  std::vector<std::vector<T>> v_in;
  for (int64_t l = 0; l < hd.layers; ++l) v_in.emplace_back(bsz * wv * kh * (l == 0 ? cc : h), T(0));
  std::vector<T> link(hd.layers * n_pix * h2), v_pre(n_pix * h2);
  pp::RowArgs<T> args{table.data(), link.data(), noise.empty() ? nullptr : noise.data(), &hd.seed,
                      given.empty() ? nullptr : given.data(),
                      images.data(), hd.return_logits ? logits.data() : nullptr,
                      static_cast<int>(bsz), static_cast<int>(cc), static_cast<int>(hd.height),
                      static_cast<int>(width), static_cast<int>(hd.levels), static_cast<int>(h),
                      static_cast<int>(hd.layers), 0, static_cast<int>(kh),
                      temperature, scale};
  for (int64_t i = 0; i < hd.height; ++i) {
    if (i > 0) {
      emu::launch_flat(n_pix * cc, pp::kThreads, pp::image_row_kernel<T>, images.data(),
                       v_in[0].data(), bsz, static_cast<int>(cc), static_cast<int>(hd.height),
                       static_cast<int>(width), static_cast<int>(pad), static_cast<int>(i), scale);
    }
    for (int64_t l = 0; l < hd.layers; ++l) {
      const int64_t cin = l == 0 ? cc : h;
      const T* vw = w[l * pp::kPerLayer + pp::kVW].data();  // (kh * k * cin, 2h)
      for (int64_t b = 0; b < bsz; ++b)
        for (int64_t x = 0; x < width; ++x)
          for (int64_t o = 0; o < h2; ++o) {
            A acc = 0;
            for (int64_t dy = 0; dy < kh; ++dy)
              for (int64_t dx = 0; dx < k; ++dx)
                for (int64_t ci = 0; ci < cin; ++ci)
                  acc += static_cast<A>(v_in[l][pp::ring_at(b, static_cast<int>(x + dx - pad),
                                                            static_cast<int>(i + dy), static_cast<int>(ci),
                                                            static_cast<int>(width), static_cast<int>(pad),
                                                            static_cast<int>(cin))]) *
                         static_cast<A>(vw[((dy * k + dx) * cin + ci) * h2 + o]);
            v_pre[(b * width + x) * h2 + o] = static_cast<T>(acc);
          }
      T* v_next = l + 1 == hd.layers ? nullptr : v_in[l + 1].data();
      const T* v_b = w[l * pp::kPerLayer + pp::kVB].data();
      const T* lw = w[l * pp::kPerLayer + pp::kLinkW].data();
      if (hd.fused_link != 0) {
        const pp::Problem p{bsz, cc, hd.height, width, hd.levels, h, hd.kernel, hd.layers, temperature, false};
        emu::launch((n_pix + pp::kLinkPixels - 1) / pp::kLinkPixels, 1, pp::kThreads,
                    pp::link_smem_bytes(p, sizeof(A)), pp::bias_gate_link_kernel<T>,
                    static_cast<const T*>(v_pre.data()), v_b, v_next, lw, link.data() + l * n_pix * h2, n_pix,
                    static_cast<int>(width), static_cast<int>(h), static_cast<int>(pad),
                    static_cast<int>(i + pad));
        continue;
      }
      emu::launch_flat(n_pix * h, pp::kThreads, pp::bias_gate_kernel<T>, v_pre.data(), v_b, v_next,
                       n_pix, static_cast<int>(width), static_cast<int>(h), static_cast<int>(pad),
                       static_cast<int>(i + pad));
      for (int64_t r = 0; r < n_pix; ++r)
        for (int64_t o = 0; o < h2; ++o) {
          A acc = 0;
          for (int64_t q = 0; q < h2; ++q)
            acc += static_cast<A>(v_pre[r * h2 + q]) * static_cast<A>(lw[q * h2 + o]);
          link[(l * n_pix + r) * h2 + o] = static_cast<T>(acc);
        }
    }
    args.row = static_cast<int>(i);
    const int64_t s = hd.samples, groups = (bsz + s - 1) / s;
    if (hd.cluster == 1) {
      const pp::Problem p{bsz, cc, hd.height, width, hd.levels, h, hd.kernel, hd.layers, temperature, false};
      const int64_t smem = pp::row_smem_bytes(p, s, sizeof(A));
      auto go = [&](auto kernel) { emu::launch(groups, 1, pp::kThreads, smem, kernel, args); };
      if (s == 1) go(pp::row_kernel<T, 1>);
      else if (s == 2) go(pp::row_kernel<T, 2>);
      else if (s == 4) go(pp::row_kernel<T, 4>);
      else go(pp::row_kernel<T, 8>);
    } else {
      const pp::ClusterLayout lay(static_cast<int>(hd.layers), static_cast<int>(s),
                                  static_cast<int>(kh), static_cast<int>(h), static_cast<int>(cc),
                                  static_cast<int>(hd.levels), static_cast<int>(hd.cluster), hd.folded != 0,
                                  hd.tensor_cores != 0);
      const bool resident = hd.resident != 0, folded = hd.folded != 0, tensor_cores = hd.tensor_cores != 0;
      const int64_t smem = lay.bytes(sizeof(A), sizeof(T), resident);
      auto go = [&](auto kernel) {
        emu::launch(groups, hd.cluster, pp::kClusterThreads, smem, kernel, args, wt_t, resident, folded,
                    tensor_cores);
      };
      pp::with_cluster_samples<T>(s, [&]<int S>() { go(pp::cluster_row_kernel<T, S>); });
    }
  }
  logits_out.assign(logits.begin(), logits.end());
}

int main(int argc, char** argv) {
  return emu::sampler_main<Header>(
      argc, argv, [](const Header& hd) { return hd.layers * pp::kPerLayer + pp::kHead; },
      []<typename T>(auto&&... args) { run<T>(args...); });
}
