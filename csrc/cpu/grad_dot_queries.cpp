// Op 2: out[b, q] = <G_b, Q_q> with the per-sample gradient G_b = sum_t g_bt a_bt^T, by either route.
//
// The materialized route builds G_b tiles (never all of [B, O, I], never a whole G_b) and contracts
// them while they are in L2; the factored route projects tokens with each query first (cheaper
// when T or n is 1). The FLOP rule that picks one is route() in mda_fast/ops/op_grad_dot_queries.py.
#include <algorithm>
#include <vector>

#include "gemm.h"
#include "ops.h"

namespace mda {

// Materialized route, fused: G_b is built one [rows, ib] tile at a time for a group of samples and
// contracted with the same tile of every query while it is in L2. Neither [B, O, I] nor a whole
// G_b is ever written, and Q streams from memory once per sample group instead of once per sample
// (at 70m-layer shapes Q is 25 MB: re-reading it per sample cost ~30%). A task owns a range of
// MR-row strips of O and walks the column tiles of NC, whose packed input block (T x ib) stays in
// L2. Partial sums are kept per task and added in task order, so the result does not depend on
// the thread count.
static void grad_dot_materialized(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                                  const float* Q, int64_t n, float* out, int nthreads) {
  const int64_t OI = O * I, Tp = std::max<int64_t>(T, 1);
  // Samples per group: their packed inputs (T x I each) stay under 64 MiB.
  const int64_t group = std::clamp<int64_t>((int64_t{16} << 20) / (Tp * I), 1, std::min<int64_t>(B, 8));
  const int64_t ib = std::min(I, NC), ni = (I + ib - 1) / ib;
  // Tasks: enough that the group's G tiles of one task fit ~256 KiB (half of a Zen L2), rounded up
  // to a multiple of the threads, strips dealt out evenly (O=128 on 2 threads: 5,6,5,6 strips, not
  // 10,10,2, which left one thread idle half the time).
  const int64_t strips = (O + MR - 1) / MR;
  const int64_t budget = std::max<int64_t>(1, ((int64_t{64} << 10) / (group * ib)) / MR);
  int64_t ntasks = (strips + budget - 1) / budget;
  ntasks = std::min(strips, (ntasks + nthreads - 1) / nthreads * nthreads);
  const int64_t ob = (strips + ntasks - 1) / ntasks * MR;  // most rows of one task
  std::vector<float> part(static_cast<size_t>(ntasks * B * n));
  std::vector<PackedB> pa(static_cast<size_t>(group * ni));  // [sample][column tile]
  for (int64_t b0 = 0; b0 < B; b0 += group) {
    const int64_t bc = std::min(group, B - b0);
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t e = 0; e < bc * ni; ++e) {
      const int64_t j = e / ni, i0 = (e % ni) * ib;
      pack_b(T, std::min(ib, I - i0), a.p + (b0 + j) * a.sb + i0 * a.sf, a.st, a.sf, pa[e]);
    }
#pragma omp parallel num_threads(nthreads)
    {
      std::vector<float> tiles(static_cast<size_t>(bc * ob * ib));
#pragma omp for schedule(static)
      for (int64_t task = 0; task < ntasks; ++task) {
        const int64_t o0 = strips * task / ntasks * MR, rows = std::min(O, strips * (task + 1) / ntasks * MR) - o0;
        float* acc = part.data() + task * B * n;
        for (int64_t ti = 0; ti < ni; ++ti) {
          const int64_t i0 = ti * ib, cols = std::min(ib, I - i0);
          for (int64_t j = 0; j < bc; ++j)  // tile_j = g_b[:, rows]^T a_b[:, i0:i0+cols]
            gemm_serial(rows, g.p + (b0 + j) * g.sb + o0 * g.sf, g.sf, g.st, pa[j * ni + ti],
                        tiles.data() + j * ob * ib, cols, false);
          for (int64_t q = 0; q < n; ++q) {
            const float* Qt = Q + q * OI + o0 * I + i0;
            for (int64_t j = 0; j < bc; ++j) {
              const float* t = tiles.data() + j * ob * ib;
              float s = 0.0f;
              if (cols == I) {
                s = dot(t, Qt, rows * I);
              } else {
                for (int64_t r = 0; r < rows; ++r) s += dot(t + r * cols, Qt + r * I, cols);
              }
              acc[(b0 + j) * n + q] = ti == 0 ? s : acc[(b0 + j) * n + q] + s;
            }
          }
        }
      }
    }
  }
  for (int64_t e = 0; e < B * n; ++e) {
    float s = 0.0f;
    for (int64_t task = 0; task < ntasks; ++task) s += part[task * B * n + e];
    out[e] = s;
  }
}

// Factored route: Y = a_rows @ Q_q^T [rows, O], out[b,q] = sum_t <Y_bt, g_bt>. Two parallel regions
// in all (packing, then sample chunks x all queries): tiny T=1 problems must not pay a fork per query.
static void grad_dot_factored(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O,
                              const float* Q, int64_t n, float* out, int nthreads) {
  const int64_t OI = O * I;
  std::vector<PackedB> Qt(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t q = 0; q < n; ++q) pack_b(I, O, Q + q * OI, 1, I, Qt[q]);
  const int64_t per_task = std::max<int64_t>(1, std::min<int64_t>((B + nthreads - 1) / nthreads,
                                                                  std::max<int64_t>(1, 4096 / std::max<int64_t>(T, 1))));
  const int64_t ntasks = (B + per_task - 1) / per_task;
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<float> Y(static_cast<size_t>(per_task * std::max<int64_t>(T, 1) * O));
#pragma omp for schedule(static)
    for (int64_t task = 0; task < ntasks; ++task) {
      const int64_t b0 = task * per_task, b1 = std::min(B, b0 + per_task), rows = (b1 - b0) * T;
      for (int64_t q = 0; q < n; ++q) {
        gemm_serial(rows, a.p + b0 * a.sb, a.st, a.sf, Qt[q], Y.data(), O, false);
        for (int64_t b = b0; b < b1; ++b) {
          float s = 0.0f;
          for (int64_t t = 0; t < T; ++t) {
            const float* y = Y.data() + ((b - b0) * T + t) * O;
            const float* gr = g.p + b * g.sb + t * g.st;
            if (g.sf == 1) {
              s += dot(y, gr, O);
            } else {
              for (int64_t o = 0; o < O; ++o) s += y[o] * gr[o * g.sf];
            }
          }
          out[b * n + q] = s;
        }
      }
    }
  }
}

void grad_dot_queries(View3 a, View3 g, int64_t B, int64_t T, int64_t I, int64_t O, const float* Q,
                      int64_t n, float* out, Route route, int nthreads) {
  if (B <= 0 || n <= 0) return;
  if (route == Route::kFactored)
    grad_dot_factored(a, g, B, T, I, O, Q, n, out, nthreads);
  else
    grad_dot_materialized(a, g, B, T, I, O, Q, n, out, nthreads);
}

}  // namespace mda
