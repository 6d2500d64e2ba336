// Host launchers of the CUDA ops (one file each, csrc/cuda/<op>.cu, compiled by nvcc; bound in
// bindings_cuda.cpp).
// All pointers are device addresses; strides are in elements; `stream` is a cudaStream_t as an
// integer (torch.cuda.current_stream().cuda_stream). Workspaces are allocated by the caller (torch),
// sized as documented per launcher. dtype: 0 fp32, 1 bf16, 2 fp16 (a and g share it).
#pragma once

#include <cstdint>

#include "../common/route.h"

namespace mdacuda {

using mda_route::Route;

// out[B,ko,ki] fp32. pin/pout: fp32 [I,ki]/[O,ko] row-major, or 0 for the seeded projection.
// ws: fp32 [B*T*(ki+ko)].
void project_per_sample_grad(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                             int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                             uintptr_t pin, uint32_t pin_seed, int64_t ki, uintptr_t pout, uint32_t pout_seed,
                             int64_t ko, uintptr_t out, uintptr_t ws, uintptr_t stream);

// out[B,n] fp32; Q fp32 [n,O,I] contiguous. Route::kMaterialized: ws fp32 [chunk*O*I], G_b for
// `chunk` samples at a time. Route::kFactored: ws fp32 [chunk*T*n*O].
void grad_dot_queries(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                      int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                      uintptr_t Q, int64_t n, uintptr_t out, Route route, uintptr_t ws, int64_t chunk,
                      uintptr_t stream);

// out[O,I] fp32 += sum_b (Q_S^T G_b Q_A)^2 (materialized route only); Q_A, Q_S fp32 contiguous;
// ws fp32 [2*chunk*O*I].
void ekfac_lambda_accumulate(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                             int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                             uintptr_t QA, uintptr_t QS, uintptr_t out, uintptr_t ws, int64_t chunk,
                             uintptr_t stream);

// One block of the grouped Kronecker inverse product (fp32 Q_A, Q_S, lam; V of `dtype`).
struct KronArgs {
  uintptr_t QA, QS, lam, V, out;
  int64_t O, I, n;
  double damping;
};
// All blocks' queries in one launch per stage (4 GEMM stages). ws fp32 [2 * sum(n*O*I)].
void kron_inverse_apply_grouped(int dtype, const KronArgs* blocks, int64_t nblocks, uintptr_t ws,
                                uintptr_t stream);

}  // namespace mdacuda
