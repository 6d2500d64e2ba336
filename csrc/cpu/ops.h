// The four attribution ops on CPU (fp32, OpenMP), one source file each: csrc/cpu/<op>.cpp.
// All pointers are raw fp32 buffers; the op's front door (mda_fast/ops/op_<op>.py) validates dtype,
// device, shapes and strides beforehand and mda_fast/ops/backend_cpp.py passes them on.
//
// A 3-d activation/gradient view X[B,T,F] is described by (ptr, sB, sT, sF) element strides.
#pragma once

#include <cstdint>

#include "../common/route.h"

namespace mda {

using mda_route::Route;

struct View3 {
  const float* p;
  int64_t sb, st, sf;
};

// Dense [rows, k] row-major matrix, or (p == nullptr) the seeded Rademacher matrix.
struct Proj {
  const float* p;
  uint32_t seed;
};

// out[B,ko,ki] = sum_t (P_out^T g_bt)(P_in^T a_bt)^T.
void project_per_sample_grad(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                             Proj pin, int64_t ki, Proj pout, int64_t ko, float* out, int nthreads);

// out[B,n] = sum_t g_bt^T Q_q a_bt, Q[n,O,I] contiguous. Route::kFactored needs a flattenable to
// [B*T, I] rows (sb == T*st); the FLOP rule is route() in mda_fast/ops/op_grad_dot_queries.py.
void grad_dot_queries(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                      const float* Q, int64_t n, float* out, Route route, int nthreads);

// out[O,I] += sum_b (Q_S^T G_b Q_A)^2, G_b = sum_t g_bt a_bt^T. Q_A[I,I], Q_S[O,O] contiguous.
// Route::kFactored rotates a, g first; the FLOP rule is route() in op_ekfac_lambda_accumulate.py.
void ekfac_lambda_accumulate(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                             const float* QA, const float* QS, float* out, Route route, int nthreads);

// One block of kron_inverse_apply: out[n,O,I] = Q_S[(Q_S^T V Q_A)/(lam+damping)]Q_A^T.
struct KronBlock {
  const float* QA;   // [I,I]
  const float* QS;   // [O,O]
  const float* lam;  // [O,I]
  const float* V;    // [n,O,I]
  float* out;        // [n,O,I]
  int64_t O, I, n;
  double damping;
};

// All blocks in one parallel region: tasks are (block, query) pairs.
void kron_inverse_apply_grouped(KronBlock* blocks, int64_t nblocks, int nthreads);

}  // namespace mda
