// Op 1: per-sample projected gradients without the [B,O,I] per-sample gradient.
//
// Per sample and token chunk: Ap = a_chunk @ P_in [tc,ki], Gp = g_chunk @ P_out [tc,ko], then
// out_b += Gp^T Ap. The projections (2*T*(I*ki + O*ko) flops per sample) dominate; both run on the
// packed micro-kernel with P packed once (or generated from its seed straight into the panels).
#include <algorithm>
#include <vector>

#include "gemm.h"
#include "ops.h"
#include "parallel.h"

namespace mda {

static void pack_proj(Proj p, int64_t rows, int64_t k, PackedB& out) {
  if (p.p == nullptr)
    pack_b_seeded(rows, k, p.seed, out);
  else
    pack_b(rows, k, p.p, k, 1, out);
}

void project_per_sample_grad(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                             Proj pin, int64_t ki, Proj pout, int64_t ko, float* out, int nthreads) {
  if (B <= 0 || ki <= 0 || ko <= 0) return;
  PackedB Pin, Pout;
  pack_proj(pin, I, ki, Pin);
  pack_proj(pout, O, ko, Pout);

  const int64_t nsplit = time_splits(B, T, nthreads);
  const int64_t osz = ko * ki;
  std::vector<float> part(nsplit > 1 ? static_cast<size_t>(nsplit * B * osz) : 0);

#pragma omp parallel num_threads(nthreads)
  {
    std::vector<float> Ap(static_cast<size_t>(TC * ki)), Gp(static_cast<size_t>(TC * ko));
    PackedB Apk;
#pragma omp for schedule(static)
    for (int64_t task = 0; task < B * nsplit; ++task) {
      const int64_t b = task / nsplit, s = task % nsplit;
      const int64_t t0 = T * s / nsplit, t1 = T * (s + 1) / nsplit;
      float* dst = nsplit > 1 ? part.data() + (s * B + b) * osz : out + b * osz;
      if (t1 <= t0) std::fill(dst, dst + osz, 0.0f);
      for (int64_t c0 = t0; c0 < t1; c0 += TC) {
        const int64_t tc = std::min(TC, t1 - c0);
        gemm_serial(tc, a.p + b * a.sb + c0 * a.st, a.st, a.sf, Pin, Ap.data(), ki, false);
        gemm_serial(tc, g.p + b * g.sb + c0 * g.st, g.st, g.sf, Pout, Gp.data(), ko, false);
        pack_b(tc, ki, Ap.data(), ki, 1, Apk);
        // A = Gp^T: element (o, t) sits at Gp[t*ko + o].
        gemm_serial(ko, Gp.data(), 1, ko, Apk, dst, ki, c0 > t0);
      }
    }
  }
  if (nsplit > 1) {
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t e = 0; e < B * osz; ++e) {
      float s = 0.0f;
      for (int64_t r = 0; r < nsplit; ++r) s += part[r * B * osz + e];
      out[e] = s;
    }
  }
}

}  // namespace mda
