// Op 4 on CUDA, grouped: every (block, query) pair of every block is one problem of a grouped GEMM,
// so each of the four stages is ONE launch however many blocks of different shapes there are:
//   X = V Q_A;  Y = (Q_S^T X) / (lam + damping);  W = Y Q_A^T;  out = Q_S W.
#include <vector>

#include "gemm.cuh"
#include "ops_cuda.h"

namespace mdacuda {

namespace {

template <typename TA, typename TB>
void launch_grouped(const std::vector<GemmDesc>& host, GemmDesc* dev, cudaStream_t st) {
  int maxM = 0, maxN = 0;
  for (const auto& d : host) {
    maxM = d.M > maxM ? d.M : maxM;
    maxN = d.N > maxN ? d.N : maxN;
  }
  check(cudaMemcpyAsync(dev, host.data(), host.size() * sizeof(GemmDesc), cudaMemcpyHostToDevice, st),
        "descriptor copy");
  const dim3 grid((maxN + BN - 1) / BN, (maxM + BM - 1) / BM, static_cast<unsigned>(host.size()));
  gemm_grouped_kernel<TA, TB><<<grid, THREADS, 0, st>>>(dev);
  check(cudaGetLastError(), "gemm_grouped_kernel launch");
}

}  // namespace

void kron_inverse_apply_grouped(int dtype, const KronArgs* blocks, int64_t nblocks, uintptr_t ws,
                                uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  std::vector<GemmDesc> s1, s2, s3, s4;
  float* w = reinterpret_cast<float*>(ws);
  for (int64_t bi = 0; bi < nblocks; ++bi) {
    const KronArgs& k = blocks[bi];
    const int64_t O = k.O, I = k.I, OI = O * I;
    const float* QA = reinterpret_cast<const float*>(k.QA);
    const float* QS = reinterpret_cast<const float*>(k.QS);
    for (int64_t q = 0; q < k.n; ++q) {
      float* X = w;
      float* Y = w + OI;
      w += 2 * OI;
      const int M = static_cast<int>(O), N = static_cast<int>(I);
      GemmDesc d{};
      d.M = M; d.N = N; d.sCm = I; d.sCn = 1;
      // The element size of V depends on dtype: byte offset computed below per stage-1 type.
      d.A = reinterpret_cast<const void*>(k.V); d.sAb = q * OI; d.sAm = I; d.sAk = 1;  // sAb = query offset
      d.B = QA; d.sBk = I; d.sBn = 1; d.C = X; d.K = N;
      s1.push_back(d);
      GemmDesc e{};
      e.M = M; e.N = N; e.K = M; e.sCm = I; e.sCn = 1;
      e.A = QS; e.sAm = 1; e.sAk = O; e.B = X; e.sBk = I; e.sBn = 1; e.C = Y;
      e.div = reinterpret_cast<const float*>(k.lam); e.damping = static_cast<float>(k.damping);
      s2.push_back(e);
      GemmDesc f{};
      f.M = M; f.N = N; f.K = N; f.sCm = I; f.sCn = 1;
      f.A = Y; f.sAm = I; f.sAk = 1; f.B = QA; f.sBk = 1; f.sBn = I; f.C = X;
      s3.push_back(f);
      GemmDesc h{};
      h.M = M; h.N = N; h.K = M; h.sCm = I; h.sCn = 1;
      h.A = QS; h.sAm = O; h.sAk = 1; h.B = X; h.sBk = I; h.sBn = 1;
      h.C = reinterpret_cast<float*>(k.out) + q * OI;
      s4.push_back(h);
    }
  }
  if (s1.empty()) return;
  GemmDesc* dev = nullptr;
  const size_t bytes = s1.size() * sizeof(GemmDesc);
  check(cudaMallocAsync(reinterpret_cast<void**>(&dev), 4 * bytes, st), "descriptor allocation");
  dispatch_dtype(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    for (auto& d : s1) {  // fold the query offset into the typed pointer
      d.A = static_cast<const T_*>(d.A) + d.sAb;
      d.sAb = 0;
    }
    launch_grouped<T_, float>(s1, dev, st);
  });
  // Each stage gets its own descriptor slice: the copies are stream-ordered with the launches.
  launch_grouped<float, float>(s2, dev + s1.size(), st);
  launch_grouped<float, float>(s3, dev + 2 * s1.size(), st);
  launch_grouped<float, float>(s4, dev + 3 * s1.size(), st);
  check(cudaFreeAsync(dev, st), "descriptor free");
}

}  // namespace mdacuda
