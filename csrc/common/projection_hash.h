// The seeded Rademacher projection entry shared by the C++ and CUDA backends (and mirrored in
// mda_fast/ops/projection.py and kernels/_common.py): the hash in docs/ARCHITECTURE.md,
// all arithmetic mod 2^32. One definition so the backends cannot drift apart.
#pragma once
#include <cstdint>

#ifdef __CUDACC__
#define MDA_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define MDA_HOST_DEVICE inline
#endif

namespace mda_hash {

MDA_HOST_DEVICE float seeded_entry(uint32_t seed, uint32_t i, uint32_t j, float scale) {
  uint32_t h = seed * 0x9E3779B1u + i * 0x85EBCA77u + j * 0xC2B2AE3Du;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return (h & 1u) ? scale : -scale;
}

}  // namespace mda_hash
