// Op 3 on CUDA: out[O, I] += sum_b (Q_S^T G_b Q_A)^2, one route (materialized): per-sample gradients
// G_b = g_b^T a_b built `chunk` samples at a time into a caller-provided workspace (never all B at
// once), rotated by two batched GEMMs, squared and summed in a fixed order.
#include "gemm.cuh"
#include "ops_cuda.h"

namespace mdacuda {

namespace {

// out[e] += sum_b R[b, e]^2 (fixed order over b: deterministic).
__global__ void square_accumulate_kernel(const float* R, int64_t nb, int64_t OI, float* out) {
  const int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (e >= OI) return;
  float s = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const float r = R[b * OI + e];
    s = fmaf(r, r, s);
  }
  out[e] += s;
}

}  // namespace

void ekfac_lambda_accumulate(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                             int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                             uintptr_t QA, uintptr_t QS, uintptr_t out, uintptr_t ws, int64_t chunk,
                             uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  float* G = reinterpret_cast<float*>(ws);
  float* H = G + chunk * O * I;
  const int64_t OI = O * I;
  dispatch_dtype(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t nb = (B - b0) < chunk ? (B - b0) : chunk;
      per_sample_grads<T_>(reinterpret_cast<const T_*>(a), sab, sat, sai, reinterpret_cast<const T_*>(g), sgb,
                           sgt, sgo, b0, nb, T, I, O, G, st);
      GemmDesc d{};  // H[b] = Q_S^T G[b]
      d.A = reinterpret_cast<const float*>(QS); d.sAb = 0; d.sAm = 1; d.sAk = O;
      d.B = G; d.sBb = OI; d.sBk = I; d.sBn = 1;
      d.C = H; d.sCb = OI; d.sCm = I; d.sCn = 1;
      d.M = static_cast<int>(O); d.N = static_cast<int>(I); d.K = static_cast<int>(O);
      launch_batched<float, float>(d, nb, st);
      GemmDesc e{};  // R[b] = H[b] Q_A (into G)
      e.A = H; e.sAb = OI; e.sAm = I; e.sAk = 1;
      e.B = reinterpret_cast<const float*>(QA); e.sBb = 0; e.sBk = I; e.sBn = 1;
      e.C = G; e.sCb = OI; e.sCm = I; e.sCn = 1;
      e.M = static_cast<int>(O); e.N = static_cast<int>(I); e.K = static_cast<int>(I);
      launch_batched<float, float>(e, nb, st);
      square_accumulate_kernel<<<static_cast<unsigned>((OI + 255) / 256), 256, 0, st>>>(
          G, nb, OI, reinterpret_cast<float*>(out));
      check(cudaGetLastError(), "square_accumulate_kernel launch");
    }
  });
}

}  // namespace mdacuda
