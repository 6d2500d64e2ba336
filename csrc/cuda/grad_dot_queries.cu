// Op 2 on CUDA: out[b, q] = <G_b, Q_q>. Materialized route: per-sample gradients G_b = g_b^T a_b
// built `chunk` samples at a time into a caller-provided workspace (never all B at once), then one
// GEMM with the queries; factored route: X = a Q^T per sample, reduced against g. The FLOP rule that
// picks one is route() in mda_fast/ops/op_grad_dot_queries.py.
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

}  // namespace

void grad_dot_queries(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                      int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                      uintptr_t Q, int64_t n, uintptr_t out, Route route, uintptr_t ws, int64_t chunk,
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
      if (route == Route::kFactored) {
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

}  // namespace mdacuda
