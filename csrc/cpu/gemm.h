// Shared fp32 GEMM building blocks for the CPU ops.
//
// C[M,N] (=|+=) A[M,K] @ B[K,N]. B is packed once into 16-column panels (zero padded) so the
// micro-kernel streams it contiguously; A is read in place through (row, col) strides with scalar
// broadcasts, so transposed operands (g^T, Q_S^T) cost no copy. The 6x16 register tile keeps 12
// ymm accumulators live (AVX2/FMA, chosen at run time); a portable loop covers other CPUs.
#pragma once

#include <cstdint>
#include <vector>

#include "../common/projection_hash.h"

namespace mda {

constexpr int MR = 6;     // rows of the register tile
constexpr int NR = 16;    // columns of the register tile (= one packed panel)
constexpr int64_t KC = 256;  // depth of one packed block: a kc x 16 panel is 16 KiB (L1)
constexpr int64_t NC = 256;  // columns per pass over A, so a kc x NC block (256 KiB) stays in L2

// B[K,N] packed as blocks of KC rows; inside a block, panels of NR columns, each kc x NR floats.
struct PackedB {
  int64_t K = 0, N = 0, npanels = 0;
  std::vector<float> buf;
  int64_t kc(int64_t k0) const { return (K - k0) < KC ? (K - k0) : KC; }
  const float* panel(int64_t k0, int64_t p) const {
    return buf.data() + k0 * npanels * NR + p * kc(k0) * NR;
  }
};

// Pack B(k, n) = src[k*rs + n*cs].
void pack_b(int64_t K, int64_t N, const float* src, int64_t rs, int64_t cs, PackedB& out);
// Pack the seeded Rademacher matrix P[dim, k] (hash in ARCHITECTURE.md), never stored unpacked.
void pack_b_seeded(int64_t dim, int64_t k, uint32_t seed, PackedB& out);
// One entry of the seeded projection (projection_hash.h, shared with the CUDA backend).
using mda_hash::seeded_entry;

// C[m, n] at C + m*ldc + n; A(m, k) at A + m*rsA + k*csA. Runs on the calling thread.
void gemm_serial(int64_t M, const float* A, int64_t rsA, int64_t csA, const PackedB& B,
                 float* C, int64_t ldc, bool accumulate);
// Same, splitting M over `nthreads` OpenMP threads (serial when already inside a parallel region).
void gemm_parallel(int64_t M, const float* A, int64_t rsA, int64_t csA, const PackedB& B,
                   float* C, int64_t ldc, bool accumulate, int nthreads);

// sum_i x[i] * y[i] with fp32 lanes (vectorized).
float dot(const float* x, const float* y, int64_t n);

bool cpu_has_avx2_fma();
// Force the portable micro-kernel (tests of the fallback path).
void set_force_generic(bool on);
const char* simd_path();

}  // namespace mda
