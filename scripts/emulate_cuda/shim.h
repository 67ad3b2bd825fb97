// The CUDA built-ins the sampler's kernels use, on CPU threads, so that their device code runs as
// host C++ under ThreadSanitizer (scripts/emulate_cuda.py). One std::thread per CUDA thread:
// __syncthreads() is a barrier over the block's threads, a warp's shuffles and ballots exchange
// values through per-lane slots between two barriers of its 32 threads, and a cluster's blocks
// run at once with a cluster barrier and each other's shared memory (map_shared_rank).
#pragma once

// Lets the kernels' sources pick this file's stand-ins for PTX they inline (tensor-core products).
#define PYGEN_EMULATED_CUDA 1

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

using std::exp;
using std::tanh;

template <typename T, typename U>
inline std::common_type_t<T, U> max(T a, U b) {
  return a > b ? a : b;
}
template <typename T, typename U>
inline std::common_type_t<T, U> min(T a, U b) {
  return a < b ? a : b;
}

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

namespace emu {

struct Warp {
  std::barrier<> bar{32};
  uint64_t slot[32];
};

struct Block {
  explicit Block(int threads, int64_t smem_bytes)
      : bar(threads), smem(static_cast<size_t>(smem_bytes), 0xFF) {  // NaN floats: unset reads show
    for (int w = 0; w < (threads + 31) / 32; ++w) warps.push_back(std::make_unique<Warp>());
  }
  std::barrier<> bar;
  std::vector<unsigned char> smem;
  std::vector<std::unique_ptr<Warp>> warps;
};

struct Cluster {
  explicit Cluster(int threads) : bar(threads) {}
  std::barrier<> bar;
  std::vector<Block*> blocks;
};

struct Self {
  dim3 thread, block, dim;
  Block* own = nullptr;
  Cluster* cluster = nullptr;
  unsigned rank = 0;
};
inline thread_local Self self;

inline unsigned char* shared_memory() { return self.own->smem.data(); }

// Lane `src`'s value of v (every lane of the warp must call).
template <typename V>
V exchange(V v, int src) {
  static_assert(sizeof(V) <= 8);
  Warp& w = *self.own->warps[self.thread.x / 32];
  const int lane = self.thread.x % 32;
  std::memcpy(&w.slot[lane], &v, sizeof(V));
  w.bar.arrive_and_wait();
  V out;
  std::memcpy(&out, &w.slot[src], sizeof(V));
  w.bar.arrive_and_wait();
  return out;
}

// cvt.rna.tf32.f32 with its low 13 bits cleared (tf32_bits in csrc/pixelcnn/cuda.cu): to nearest,
// ties away from zero, for finite x.
inline uint32_t tf32_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return (bits + 0x1000u) & 0xffffe000u;
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 (every lane of the warp must call), with the
// fragments as the PTX ISA lays them out (mma_tf32 in csrc/pixelcnn/cuda.cu): each lane gathers
// rows g and g + 8 of A and columns 2t and 2t + 1 of B from the lanes that hold them, then sums
// its four outputs over k in order (TF32 products are exact in float).
inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int lane = static_cast<int>(self.thread.x % 32), g = lane / 4, t = lane % 4;
  uint32_t rows[2][8], cols[2][8];
  for (int kk = 0; kk < 4; ++kk) {
    for (int r = 0; r < 2; ++r) {
      rows[r][kk] = exchange(a[r], 4 * g + kk);
      rows[r][kk + 4] = exchange(a[r + 2], 4 * g + kk);
    }
    for (int c = 0; c < 2; ++c) {
      cols[c][kk] = exchange(b[0], 4 * (2 * t + c) + kk);
      cols[c][kk + 4] = exchange(b[1], 4 * (2 * t + c) + kk);
    }
  }
  auto value = [](uint32_t bits) {
    float v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  };
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c)
      for (int kk = 0; kk < 8; ++kk) d[2 * r + c] += value(rows[r][kk]) * value(cols[c][kk]);
}

// mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16} (mma_16bit in csrc/pixelcnn/cuda.cu; T:
// c10::BFloat16 or c10::Half), fragments as the PTX ISA lays them out: each lane gathers rows g and
// g + 8 of A and columns 2t and 2t + 1 of B, two 16-bit values a register (the lower k in the low
// half), then sums its four outputs over k in order (16-bit products are exact in float).
template <typename T>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  const int lane = static_cast<int>(self.thread.x % 32), g = lane / 4, t = lane % 4;
  float rows[2][16], cols[2][16];
  auto value = [](uint32_t bits, int half) {
    return static_cast<float>(T(static_cast<uint16_t>(bits >> (16 * half)), T::from_bits()));
  };
  auto spread = [&](float* to, int kk, uint32_t low_k, uint32_t high_k) {
    to[2 * kk] = value(low_k, 0);
    to[2 * kk + 1] = value(low_k, 1);
    to[2 * kk + 8] = value(high_k, 0);
    to[2 * kk + 9] = value(high_k, 1);
  };
  for (int kk = 0; kk < 4; ++kk) {
    for (int r = 0; r < 2; ++r) {
      const uint32_t low_k = exchange(a[r], 4 * g + kk), high_k = exchange(a[r + 2], 4 * g + kk);
      spread(rows[r], kk, low_k, high_k);
    }
    for (int c = 0; c < 2; ++c) {
      const uint32_t low_k = exchange(b[0], 4 * (2 * t + c) + kk), high_k = exchange(b[1], 4 * (2 * t + c) + kk);
      spread(cols[c], kk, low_k, high_k);
    }
  }
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 2; ++c)
      for (int kk = 0; kk < 16; ++kk) d[2 * r + c] += rows[r][kk] * cols[c][kk];
}

// Runs kernel(args...) on `clusters` clusters of `per_cluster` blocks of `threads` threads, one
// cluster at a time (blocks of different clusters never interact), each thread a std::thread.
template <typename Kernel, typename... Args>
void launch(int clusters, int per_cluster, int threads, int64_t smem_bytes, Kernel kernel,
            Args... args) {
  for (int c = 0; c < clusters; ++c) {
    Cluster cluster(per_cluster * threads);
    std::vector<std::unique_ptr<Block>> blocks;
    for (int r = 0; r < per_cluster; ++r) {
      blocks.push_back(std::make_unique<Block>(threads, smem_bytes));
      cluster.blocks.push_back(blocks.back().get());
    }
    std::vector<std::thread> pool;
    for (int r = 0; r < per_cluster; ++r) {
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, r, t] {
          self.thread = {static_cast<unsigned>(t), 1, 1};
          self.block = {static_cast<unsigned>(c * per_cluster + r), 1, 1};
          self.dim = {static_cast<unsigned>(threads), 1, 1};
          self.own = blocks[r].get();
          self.cluster = &cluster;
          self.rank = static_cast<unsigned>(r);
          kernel(args...);
        });
      }
    }
    for (auto& th : pool) th.join();
  }
}

// Kernels without barriers or shuffles (one thread per element): a loop on this thread.
template <typename Kernel, typename... Args>
void launch_flat(int64_t n, int threads, Kernel kernel, Args... args) {
  for (int64_t i = 0; i < n; ++i) {
    self.thread = {static_cast<unsigned>(i % threads), 1, 1};
    self.block = {static_cast<unsigned>(i / threads), 1, 1};
    self.dim = {static_cast<unsigned>(threads), 1, 1};
    kernel(args...);
  }
}

}  // namespace emu

#define threadIdx (emu::self.thread)
#define blockIdx (emu::self.block)
#define blockDim (emu::self.dim)

inline void __syncthreads() { emu::self.own->bar.arrive_and_wait(); }

template <typename V>
V __shfl_xor_sync(unsigned, V v, int mask) {
  return emu::exchange(v, (emu::self.thread.x % 32) ^ mask);
}
template <typename V>
V __shfl_up_sync(unsigned, V v, int delta) {
  const int lane = emu::self.thread.x % 32;
  return emu::exchange(v, lane >= delta ? lane - delta : lane);  // CUDA: out of range keeps v
}
template <typename V>
V __shfl_sync(unsigned, V v, int src) {
  return emu::exchange(v, src);
}
inline unsigned __ballot_sync(unsigned, bool predicate) {
  emu::Warp& w = *emu::self.own->warps[emu::self.thread.x / 32];
  const int lane = emu::self.thread.x % 32;
  w.slot[lane] = predicate ? 1 : 0;
  w.bar.arrive_and_wait();
  unsigned bits = 0;
  for (int l = 0; l < 32; ++l) bits |= static_cast<unsigned>(w.slot[l]) << l;
  w.bar.arrive_and_wait();
  return bits;
}
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }

namespace cooperative_groups {
struct cluster_group {
  unsigned num_blocks() const { return static_cast<unsigned>(emu::self.cluster->blocks.size()); }
  unsigned block_rank() const { return emu::self.rank; }
  template <typename T>
  T* map_shared_rank(T* addr, unsigned rank) const {
    const auto offset = reinterpret_cast<unsigned char*>(addr) - emu::self.own->smem.data();
    return reinterpret_cast<T*>(emu::self.cluster->blocks[rank]->smem.data() + offset);
  }
  void sync() const { emu::self.cluster->bar.arrive_and_wait(); }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups
