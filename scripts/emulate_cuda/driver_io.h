// The drivers' file format (scripts/emulate_cuda.py writes it): an int64 header, one float64
// value, then arrays, each an int64 count and float64 values; the output is raw values.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <new>
#include <stdexcept>
#include <vector>

namespace emu {

struct Input {
  std::ifstream file;
  explicit Input(const char* path) : file(path, std::ios::binary) {}

  template <typename Header>
  Header header(double* value) {
    Header hd;
    file.read(reinterpret_cast<char*>(&hd), sizeof hd);
    file.read(reinterpret_cast<char*>(value), sizeof *value);
    return hd;
  }

  std::vector<double> array() {
    int64_t n = 0;
    file.read(reinterpret_cast<char*>(&n), sizeof n);
    std::vector<double> v(n);
    file.read(reinterpret_cast<char*>(v.data()), n * sizeof(double));
    if (!file) throw std::runtime_error("short input");
    return v;
  }
};

// An array in T, aligned for the kernels' vector loads and stores (16-byte groups, 32 for double),
// or nullptr when empty: the kernels' absent tensor. Allocated to its exact size, so that
// AddressSanitizer reports an access past its end.
template <typename T>
struct Array {
  static constexpr std::align_val_t kAlign{64};
  struct Free {
    void operator()(T* p) const { ::operator delete(p, kAlign); }
  };
  std::unique_ptr<T, Free> owner;
  T* data = nullptr;
  explicit Array(size_t n) {
    if (n > 0) owner.reset(data = static_cast<T*>(::operator new(n * sizeof(T), kAlign)));
  }
  explicit Array(const std::vector<double>& values) : Array(values.size()) {
    for (size_t i = 0; i < values.size(); ++i) data[i] = static_cast<T>(values[i]);
  }
};

template <typename T>
void append(std::vector<double>& out, const Array<T>& a, size_t n) {
  for (size_t i = 0; i < n; ++i) out.push_back(static_cast<double>(a.data[i]));
}

// fn.template operator()<T>() with T the kernels' dtype of `code`: 8 double, 4 float, 2 bfloat16,
// 1 half.
template <typename Fn>
void with_dtype(int64_t code, Fn&& fn) {
  switch (code) {
    case 8:
      return fn.template operator()<double>();
    case 4:
      return fn.template operator()<float>();
    case 2:
      return fn.template operator()<c10::BFloat16>();
    case 1:
      return fn.template operator()<c10::Half>();
  }
  throw std::runtime_error("unknown dtype code");
}

template <typename V>
void write(std::ofstream& out, const std::vector<V>& values) {
  out.write(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(V));
}

// What a driver reads from its INPUT (argv[1]): the header, its float64 value, count(header) arrays.
template <typename Header>
struct Problem {
  Header hd;
  double value;
  std::vector<std::vector<double>> arrays;
};

template <typename Header, typename Count>
Problem<Header> read_problem(int argc, char** argv, Count count) {
  if (argc != 3) throw std::runtime_error("usage: DRIVER INPUT OUTPUT");
  Input in(argv[1]);
  Problem<Header> p;
  p.hd = in.header<Header>(&p.value);
  for (int64_t i = 0; i < count(p.hd); ++i) p.arrays.push_back(in.array());
  return p;
}

// The main of the drivers that write float64 values: run(header, value, arrays, out), then the
// values of out written to OUTPUT (argv[2]).
template <typename Header, typename Count, typename Run>
int kernel_main(int argc, char** argv, Count count, Run run) {
  const Problem<Header> p = read_problem<Header>(argc, argv, count);
  std::vector<double> out;
  run(p.hd, p.value, p.arrays, out);
  std::ofstream file(argv[2], std::ios::binary);
  write(file, out);
  return 0;
}

// The samplers' drivers' main: the header, n_weights(header) weights, the noise and the given
// levels (empty: none) in; run in the dtype of header.dtype (a with_dtype code) as
// run.template operator()<T>(header, temperature, weights, noise, given, images, logits); the
// images and logits out.
template <typename Header, typename Count, typename Run>
int sampler_main(int argc, char** argv, Count n_weights, Run run) {
  Problem<Header> p = read_problem<Header>(argc, argv, [&](const Header& hd) { return n_weights(hd) + 2; });
  const std::vector<int64_t> given(p.arrays.back().begin(), p.arrays.back().end());
  p.arrays.pop_back();
  const std::vector<double> noise = std::move(p.arrays.back());
  p.arrays.pop_back();
  const Header& hd = p.hd;
  std::vector<int64_t> images(hd.batch * hd.channels * hd.height * hd.width, -1);
  std::vector<double> logits;
  with_dtype(hd.dtype, [&]<typename T>() {
    run.template operator()<T>(hd, p.value, p.arrays, noise, given, images, logits);
  });
  std::ofstream out(argv[2], std::ios::binary);
  write(out, images);
  write(out, logits);
  return 0;
}

}  // namespace emu
