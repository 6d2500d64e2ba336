// Op 4: out_q = Q_S [(Q_S^T V_q Q_A) / (lam + damping)] Q_A^T for many blocks of different shapes.
//
// Q_A and Q_A^T are packed once per block (they are the right operands of two GEMMs); every
// (block, query) pair is one task of a single dynamic OpenMP loop, so small blocks share the cores.
#include <algorithm>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "gemm.h"
#include "ops.h"

namespace mda {

namespace {
struct Packed2 {
  PackedB qa, qat;
};

void one_query(const KronBlock& k, const Packed2& pk, int64_t q, std::vector<float>& x,
               std::vector<float>& y, PackedB& scratch, int inner) {
  const int64_t O = k.O, I = k.I, OI = O * I;
  x.resize(static_cast<size_t>(OI));
  y.resize(static_cast<size_t>(OI));
  const float* V = k.V + q * OI;
  float* out = k.out + q * OI;
  gemm_parallel(O, V, I, 1, pk.qa, x.data(), I, false, inner);           // X = V Q_A
  pack_b(O, I, x.data(), I, 1, scratch);
  gemm_parallel(O, k.QS, 1, O, scratch, y.data(), I, false, inner);      // Y = Q_S^T X
  const float d = static_cast<float>(k.damping);
  for (int64_t e = 0; e < OI; ++e) y[e] = y[e] / (k.lam[e] + d);
  gemm_parallel(O, y.data(), I, 1, pk.qat, x.data(), I, false, inner);   // W = Y Q_A^T
  pack_b(O, I, x.data(), I, 1, scratch);
  gemm_parallel(O, k.QS, O, 1, scratch, out, I, false, inner);          // out = Q_S W
}
}  // namespace

void kron_inverse_apply_grouped(KronBlock* blocks, int64_t nblocks, int nthreads) {
  if (nblocks <= 0) return;
  std::vector<Packed2> packed(static_cast<size_t>(nblocks));
  std::vector<std::pair<int64_t, int64_t>> tasks;
  for (int64_t i = 0; i < nblocks; ++i)
    for (int64_t q = 0; q < blocks[i].n; ++q) tasks.emplace_back(i, q);

#pragma omp parallel for schedule(dynamic, 1) num_threads(nthreads)
  for (int64_t i = 0; i < nblocks; ++i) {
    const KronBlock& k = blocks[i];
    if (k.n == 0) continue;
    pack_b(k.I, k.I, k.QA, k.I, 1, packed[i].qa);
    pack_b(k.I, k.I, k.QA, 1, k.I, packed[i].qat);
  }

  const int64_t ntasks = static_cast<int64_t>(tasks.size());
  if (ntasks < nthreads) {
    // Too few tasks to fill the cores: run them in turn with threaded GEMMs.
    std::vector<float> x, y;
    PackedB scratch;
    for (const auto& t : tasks) one_query(blocks[t.first], packed[t.first], t.second, x, y, scratch, nthreads);
    return;
  }
#pragma omp parallel num_threads(nthreads)
  {
    std::vector<float> x, y;
    PackedB scratch;
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < ntasks; ++t)
      one_query(blocks[tasks[t].first], packed[tasks[t].first], tasks[t].second, x, y, scratch, 1);
  }
}

}  // namespace mda
