// Op 1 on CUDA: Ap = a @ P_in, Gp = g @ P_out (projections generated from the seed in-kernel when
// seeded), then out_b = Gp_b^T Ap_b. fp32 accumulate; a, g fp32/bf16/fp16.
#include <cmath>

#include "gemm.cuh"
#include "ops_cuda.h"

namespace mdacuda {

void project_per_sample_grad(int dtype, uintptr_t a, int64_t sab, int64_t sat, int64_t sai, uintptr_t g,
                             int64_t sgb, int64_t sgt, int64_t sgo, int64_t B, int64_t T, int64_t I, int64_t O,
                             uintptr_t pin, uint32_t pin_seed, int64_t ki, uintptr_t pout, uint32_t pout_seed,
                             int64_t ko, uintptr_t out, uintptr_t ws, uintptr_t stream) {
  auto st = reinterpret_cast<cudaStream_t>(stream);
  float* Ap = reinterpret_cast<float*>(ws);
  float* Gp = Ap + B * T * ki;
  dispatch_dtype(dtype, [&](auto tag) {
    using T_ = decltype(tag);
    GemmDesc d{};
    // Ap[b] = a_b [T,I] @ P_in [I,ki]
    d.A = reinterpret_cast<const T_*>(a); d.sAb = sab; d.sAm = sat; d.sAk = sai;
    d.B = reinterpret_cast<const float*>(pin); d.sBb = 0; d.sBk = ki; d.sBn = 1;
    d.seed = pin_seed; d.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(ki)));
    d.C = Ap; d.sCb = T * ki; d.sCm = ki; d.sCn = 1;
    d.M = static_cast<int>(T); d.N = static_cast<int>(ki); d.K = static_cast<int>(I);
    launch_batched<T_, float>(d, B, st);
    // Gp[b] = g_b [T,O] @ P_out [O,ko]
    d.A = reinterpret_cast<const T_*>(g); d.sAb = sgb; d.sAm = sgt; d.sAk = sgo;
    d.B = reinterpret_cast<const float*>(pout); d.sBk = ko;
    d.seed = pout_seed; d.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(ko)));
    d.C = Gp; d.sCb = T * ko; d.sCm = ko;
    d.N = static_cast<int>(ko); d.K = static_cast<int>(O);
    launch_batched<T_, float>(d, B, st);
  });
  // out[b] = Gp_b^T [ko,T] @ Ap_b [T,ki]
  GemmDesc d{};
  d.A = Gp; d.sAb = T * ko; d.sAm = 1; d.sAk = ko;
  d.B = Ap; d.sBb = T * ki; d.sBk = ki; d.sBn = 1;
  d.C = reinterpret_cast<float*>(out); d.sCb = ko * ki; d.sCm = ki; d.sCn = 1;
  d.M = static_cast<int>(ko); d.N = static_cast<int>(ki); d.K = static_cast<int>(T);
  launch_batched<float, float>(d, B, st);
}

}  // namespace mdacuda
