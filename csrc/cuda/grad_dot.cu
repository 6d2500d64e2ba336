// Ops 2 and 3 on CUDA: contractions with per-sample gradients G_b = g_b^T a_b, built `chunk`
// samples at a time into a caller-provided workspace (never all B at once).
#include "gemm.cuh"
#include "ops_cuda.h"

namespace mdacuda {

namespace {

// out[b, q] = sum_{t,o} X[b, t, q*O + o] * g[b, t, o]; one thread block per (b, q).
template <typename TG>
__global__ void factored_reduce_kernel(const float* X, const TG* g, int64_t sgb, int64_t sgt, int64_t sgo,
                                       int64_t T, int64_t O, int64_t n, float* out) {
  const int64_t b = blockIdx.x, q = blockIdx.y;
  float s = 0.0f;
  for (int64_t e = threadIdx.x; e < T * O; e += blockDim.x) {
    const int64_t t = e / O, o = e % O;
    s += X[(b * T + t) * n * O + q * O + o] * to_f(g[b * sgb + t * sgt + o * sgo]);
  }
  __shared__ float red[256];
  red[threadIdx.x] = s;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
    __syncthreads();
  }
  if (threadIdx.x == 0) out[b * n + q] = red[0];
}

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

// G[b] = g_b^T a_b for b in [b0, b0 + nb) into G [nb, O, I].
template <typename T_>
void per_sample_grads(const T_* a, int64_t sab, int64_t sat, int64_t sai, const T_* g, int64_t sgb,
                      int64_t sgt, int64_t sgo, int64_t b0, int64_t nb, int64_t T, int64_t I, int64_t O,
                      float* G, cudaStream_t st) {
  GemmDesc d{};
  d.A = g + b0 * sgb; d.sAb = sgb; d.sAm = sgo; d.sAk = sgt;
  d.B = a + b0 * sab; d.sBb = sab; d.sBk = sat; d.sBn = sai;
  d.C = G; d.sCb = O * I; d.sCm = I; d.sCn = 1;
  d.M = static_cast<int>(O); d.N = static_cast<int>(I); d.K = static_cast<int>(T);
  launch_batched<T_, T_>(d, nb, st);
}

}  // namespace

void grad_dot_queries(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                      int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                      uintptr_t Q, int64_t n, uintptr_t out, bool factored, uintptr_t ws, int64_t chunk,
                      uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  float* W = reinterpret_cast<float*>(ws);
  const float* Qf = reinterpret_cast<const float*>(Q);
  float* outf = reinterpret_cast<float*>(out);
  dispatch_dtype(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    const T_* ap = reinterpret_cast<const T_*>(a);
    const T_* gp = reinterpret_cast<const T_*>(g);
    for (int64_t b0 = 0; b0 < B; b0 += chunk) {
      const int64_t nb = (B - b0) < chunk ? (B - b0) : chunk;
      if (factored) {
        // X[b, t, q*O+o] = sum_i a[b,t,i] Q[q,o,i]: one GEMM per sample over all queries.
        GemmDesc d{};
        d.A = ap + b0 * sab; d.sAb = sab; d.sAm = sat; d.sAk = sai;
        d.B = Qf; d.sBb = 0; d.sBk = 1; d.sBn = I;
        d.C = W; d.sCb = T * n * O; d.sCm = n * O; d.sCn = 1;
        d.M = static_cast<int>(T); d.N = static_cast<int>(n * O); d.K = static_cast<int>(I);
        launch_batched<T_, float>(d, nb, st);
        factored_reduce_kernel<T_><<<dim3(nb, n), 256, 0, st>>>(W, gp + b0 * sgb, sgb, sgt, sgo, T, O, n,
                                                                outf + b0 * n);
        check(cudaGetLastError(), "factored_reduce_kernel launch");
      } else {
        per_sample_grads<T_>(ap, sab, sat, sai, gp, sgb, sgt, sgo, b0, nb, T, I, O, W, st);
        // out[b0:b0+nb, :] = G [nb, O*I] @ Q^T [O*I, n]
        GemmDesc d{};
        d.A = W; d.sAm = O * I; d.sAk = 1;
        d.B = Qf; d.sBk = 1; d.sBn = O * I;
        d.C = outf + b0 * n; d.sCm = n; d.sCn = 1;
        d.M = static_cast<int>(nb); d.N = static_cast<int>(n); d.K = static_cast<int>(O * I);
        launch_batched<float, float>(d, 1, st);
      }
    }
  });
}

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
