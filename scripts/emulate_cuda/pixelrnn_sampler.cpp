// The CUDA PixelRNN sampler (csrc/pixelrnn/cuda.cu) over its kernel emulated on CPU threads
// (shim.h); scripts/emulate_cuda.py compiles it after the kernel's code. Usage: pixelrnn_sampler
// INPUT OUTPUT. INPUT: int64 header (see Header), float64 temperature, then for each weight in the
// export order, the noise and the given levels (empty: none): int64 count, float64 values.
// OUTPUT: the images (int64) and the logits (float64).
#include <stdexcept>

#include "driver_io.h"

namespace pr = pygen::pixelrnn;

struct Header {
  int64_t batch, channels, height, width, levels, hidden, kernel, row_kernel, layers, diagonal;
  int64_t seed, dtype, n_weights;
};

template <typename T>
void run(const Header& hd, double temperature, const std::vector<std::vector<double>>& weights_in,
         const std::vector<double>& noise_in, const std::vector<int64_t>& given,
         std::vector<int64_t>& images, std::vector<double>& logits_out) {
  std::vector<std::vector<T>> w;
  for (const auto& v : weights_in) w.emplace_back(v.begin(), v.end());
  std::vector<const T*> table;
  for (const auto& v : w) table.push_back(v.data());
  const pr::Problem p{hd.diagonal != 0, hd.batch, hd.channels, hd.height, hd.width, hd.levels,
                      hd.hidden, hd.kernel, hd.row_kernel, hd.layers, temperature, true};
  const int64_t per_sample = pr::scratch_per_sample(p);
  std::vector<T> scratch(hd.batch * per_sample, T(0)), noise(noise_in.begin(), noise_in.end());
  std::vector<T> logits(hd.batch * hd.levels * hd.channels * hd.height * hd.width);
  const pr::Args<T> args{table.data(), noise.empty() ? nullptr : noise.data(), &hd.seed,
                         given.empty() ? nullptr : given.data(), images.data(), logits.data(),
                         scratch.data(), per_sample,
                         static_cast<int>(hd.channels), static_cast<int>(hd.height),
                         static_cast<int>(hd.width), static_cast<int>(hd.levels),
                         static_cast<int>(hd.hidden), static_cast<int>(hd.kernel),
                         static_cast<int>(hd.row_kernel), static_cast<int>(hd.layers),
                         hd.diagonal != 0, temperature};
  const int64_t smem = (8 * hd.hidden + hd.levels) * static_cast<int64_t>(sizeof(T));
  // Samples are independent blocks: one at a time, as one-block clusters.
  emu::launch(hd.batch, 1, pr::kThreads, smem, pr::sample_kernel<T>, args);
  logits_out.assign(logits.begin(), logits.end());
}

int main(int argc, char** argv) {
  return emu::sampler_main<Header>(
      argc, argv, [](const Header& hd) { return hd.n_weights; },
      []<typename T>(auto&&... args) { run<T>(args...); });
}
