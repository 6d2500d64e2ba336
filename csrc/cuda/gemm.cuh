// Tiled fp32-accumulate GEMM for the CUDA ops: C (=|+=) A @ B [/ (div + damping)].
//
// A(m,k), B(k,n), C(m,n) are addressed through element strides, so transposed operands and
// [B,T,F] activation views need no copies. A and B are templated on the stored type (float,
// __half, __nv_bfloat16) and converted to fp32 while staging into shared memory. B may instead be
// the seeded Rademacher projection, generated from its hash on the fly (never stored).
// One 64x64 tile per thread block (256 threads, 4x4 outputs each); blockIdx.z selects the batch
// entry (strided batch) or the problem (grouped: an array of descriptors in device memory).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../common/projection_hash.h"

namespace mdacuda {

enum DType : int { kF32 = 0, kBF16 = 1, kF16 = 2 };

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }

using mda_hash::seeded_entry;  // ARCHITECTURE.md projection hash, shared with the C++ backend

struct GemmDesc {
  const void* A;
  int64_t sAb, sAm, sAk;
  const void* B;  // nullptr: seeded projection (seed, scale)
  int64_t sBb, sBk, sBn;
  float* C;
  int64_t sCb, sCm, sCn;
  int M, N, K;
  int accumulate;      // C += result instead of C = result
  const float* div;    // optional [M, N] row-major divisor (lam), applied as / (div + damping)
  float damping;
  uint32_t seed;
  float scale;
};

constexpr int BM = 64, BN = 64, BK = 16, THREADS = 256;

template <typename TA, typename TB>
__device__ __forceinline__ void gemm_tile(const GemmDesc& d, int64_t batch) {
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  if (m0 >= d.M || n0 >= d.N) return;  // grouped launches size the grid for the largest problem
  const TA* A = static_cast<const TA*>(d.A) + batch * d.sAb;
  const TB* B = static_cast<const TB*>(d.B) + (d.B ? batch * d.sBb : 0);
  float* C = d.C + batch * d.sCb;
  const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < d.K; k0 += BK) {
    for (int e = tid; e < BM * BK; e += THREADS) {
      const int mm = e / BK, kk = e % BK, m = m0 + mm, k = k0 + kk;
      As[kk][mm] = (m < d.M && k < d.K) ? to_f(A[m * d.sAm + k * d.sAk]) : 0.0f;
    }
    for (int e = tid; e < BK * BN; e += THREADS) {
      const int kk = e / BN, nn = e % BN, k = k0 + kk, n = n0 + nn;
      float v = 0.0f;
      if (k < d.K && n < d.N)
        v = d.B ? to_f(B[k * d.sBk + n * d.sBn]) : seeded_entry(d.seed, k, n, d.scale);
      Bs[kk][nn] = v;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float ar[4], br[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) ar[i] = As[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) br[j] = Bs[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int m = m0 + ty + 16 * i;
    if (m >= d.M) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int n = n0 + tx + 16 * j;
      if (n >= d.N) continue;
      float v = acc[i][j];
      if (d.div) v = v / (d.div[static_cast<int64_t>(m) * d.N + n] + d.damping);
      float* c = C + m * d.sCm + n * d.sCn;
      *c = d.accumulate ? *c + v : v;
    }
  }
}

template <typename TA, typename TB>
__global__ void __launch_bounds__(THREADS) gemm_batched_kernel(GemmDesc d) {
  gemm_tile<TA, TB>(d, blockIdx.z);
}

template <typename TA, typename TB>
__global__ void __launch_bounds__(THREADS) gemm_grouped_kernel(const GemmDesc* descs) {
  gemm_tile<TA, TB>(descs[blockIdx.z], 0);
}

inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

// Strided-batch launch (batch <= 65535 per launch; larger batches are split).
template <typename TA, typename TB>
void launch_batched(GemmDesc d, int64_t batch, cudaStream_t stream) {
  if (d.M <= 0 || d.N <= 0 || batch <= 0) return;
  const dim3 block(THREADS);
  for (int64_t b0 = 0; b0 < batch; b0 += 65535) {
    GemmDesc s = d;
    s.A = static_cast<const TA*>(d.A) + b0 * d.sAb;
    if (d.B) s.B = static_cast<const TB*>(d.B) + b0 * d.sBb;
    s.C = d.C + b0 * d.sCb;
    const unsigned nb = static_cast<unsigned>(batch - b0 < 65535 ? batch - b0 : 65535);
    const dim3 grid((d.N + BN - 1) / BN, (d.M + BM - 1) / BM, nb);
    gemm_batched_kernel<TA, TB><<<grid, block, 0, stream>>>(s);
  }
  check(cudaGetLastError(), "gemm_batched_kernel launch");
}

// G[b] = g_b^T a_b for b in [b0, b0 + nb) into G [nb, O, I] (ops 2 and 3, materialized route).
template <typename T_>
inline void per_sample_grads(const T_* a, int64_t sab, int64_t sat, int64_t sai, const T_* g, int64_t sgb,
                             int64_t sgt, int64_t sgo, int64_t b0, int64_t nb, int64_t T, int64_t I, int64_t O,
                             float* G, cudaStream_t st) {
  GemmDesc d{};
  d.A = g + b0 * sgb; d.sAb = sgb; d.sAm = sgo; d.sAk = sgt;
  d.B = a + b0 * sab; d.sBb = sab; d.sBk = sat; d.sBn = sai;
  d.C = G; d.sCb = O * I; d.sCm = I; d.sCn = 1;
  d.M = static_cast<int>(O); d.N = static_cast<int>(I); d.K = static_cast<int>(T);
  launch_batched<T_, T_>(d, nb, st);
}

// Element-type dispatch for the activations' dtype code.
template <class F>
void dispatch_dtype(int dtype, F&& f) {
  switch (dtype) {
    case kF32: f(float{}); break;
    case kBF16: f(__nv_bfloat16{}); break;
    case kF16: f(__half{}); break;
    default: throw std::invalid_argument("dtype code must be 0 (fp32), 1 (bf16) or 2 (fp16)");
  }
}

}  // namespace mdacuda
