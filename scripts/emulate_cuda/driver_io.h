// The drivers' file format (scripts/emulate_cuda.py writes it): an int64 header, one float64
// value, then arrays, each an int64 count and float64 values; the output is raw values.
#pragma once

#include <cstdint>
#include <fstream>
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

template <typename V>
void write(std::ofstream& out, const std::vector<V>& values) {
  out.write(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(V));
}

}  // namespace emu
