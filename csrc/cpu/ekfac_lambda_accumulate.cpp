// Op 3: out[O, I] += sum_b (Q_S^T G_b Q_A)^2 with the per-sample gradient G_b = sum_t g_bt a_bt^T.
//
// The materialized route builds one G_b [O,I] per task (never all B at once) and rotates it; the
// factored route rotates the tokens first (a Q_A, g Q_S; cheaper when T is small). The FLOP rule
// that picks one is route() in mda_fast/ops/op_ekfac_lambda_accumulate.py.
#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm.h"
#include "ops.h"
#include "parallel.h"

namespace mda {

// G[O,I] = sum_t g_bt a_bt^T, accumulated over token chunks of TC (packed chunk of a stays in L2).
static void per_sample_grad(View3 a, View3 g, int64_t b, int64_t T, int64_t I, int64_t O, float* G,
                            PackedB& scratch, int inner_threads) {
  if (T <= 0) std::fill(G, G + O * I, 0.0f);
  for (int64_t c0 = 0; c0 < T; c0 += TC) {
    const int64_t tc = std::min(TC, T - c0);
    pack_b(tc, I, a.p + b * a.sb + c0 * a.st, a.st, a.sf, scratch);
    // A = g_chunk^T: element (o, t) at g + t*st + o*sf.
    gemm_parallel(O, g.p + b * g.sb + c0 * g.st, g.sf, g.st, scratch, G, I, c0 > 0, inner_threads);
  }
}

// acc[O,I] += (Q_S^T G_b Q_A)^2 for one sample, through either route.
static void lambda_one_sample(View3 a, View3 g, int64_t b, int64_t T, int64_t I, int64_t O,
                              const PackedB& QAp, const PackedB& QSp, const float* QS, Route route,
                              float* acc, std::vector<float>& w1, std::vector<float>& w2,
                              PackedB& scratch, int inner) {
  const int64_t OI = O * I;
  w2.resize(static_cast<size_t>(OI));
  if (route == Route::kFactored) {
    // ã = a_b Q_A [T,I], g̃ = g_b Q_S [T,O], R = g̃^T ã.
    w1.resize(static_cast<size_t>(std::max<int64_t>(T, 1) * (I + O)));
    float* at = w1.data();
    float* gt = w1.data() + T * I;
    gemm_parallel(T, a.p + b * a.sb, a.st, a.sf, QAp, at, I, false, inner);
    gemm_parallel(T, g.p + b * g.sb, g.st, g.sf, QSp, gt, O, false, inner);
    pack_b(T, I, at, I, 1, scratch);
    gemm_parallel(O, gt, 1, O, scratch, w2.data(), I, false, inner);
  } else {
    // G = g^T a, H = Q_S^T G, R = H Q_A.
    w1.resize(static_cast<size_t>(OI));
    per_sample_grad(a, g, b, T, I, O, w1.data(), scratch, inner);
    pack_b(O, I, w1.data(), I, 1, scratch);
    gemm_parallel(O, QS, 1, O, scratch, w1.data(), I, false, inner);  // Q_S^T: (o', o) at QS[o*O+o']
    gemm_parallel(O, w1.data(), I, 1, QAp, w2.data(), I, false, inner);
  }
  const float* r = w2.data();
  for (int64_t e = 0; e < OI; ++e) acc[e] += r[e] * r[e];
}

void ekfac_lambda_accumulate(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                             const float* QA, const float* QS, float* out, Route route, int nthreads) {
  if (B <= 0) return;
  const int64_t OI = O * I;
  PackedB QAp, QSp;
  pack_b(I, I, QA, I, 1, QAp);
  if (route == Route::kFactored) pack_b(O, O, QS, O, 1, QSp);
  if (B < nthreads) {
    // Few samples: parallelize inside each GEMM; accumulate straight into out.
    std::vector<float> w1, w2;
    PackedB scratch;
    for (int64_t b = 0; b < B; ++b)
      lambda_one_sample(a, g, b, T, I, O, QAp, QSp, QS, route, out, w1, w2, scratch, nthreads);
    return;
  }
  std::vector<float> parts(static_cast<size_t>(nthreads * OI), 0.0f);
#pragma omp parallel num_threads(nthreads)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    std::vector<float> w1, w2;
    PackedB scratch;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; ++b)
      lambda_one_sample(a, g, b, T, I, O, QAp, QSp, QS, route, parts.data() + tid * OI, w1, w2,
                        scratch, 1);
  }
  // Fixed-order reduction: deterministic for a given thread count.
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t e = 0; e < OI; ++e) {
    float s = 0.0f;
    for (int r = 0; r < nthreads; ++r) s += parts[r * OI + e];
    out[e] += s;
  }
}

}  // namespace mda
