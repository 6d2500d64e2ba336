// pybind11 surface of mda_fast._C_cuda: device addresses, shapes, element strides, a stream handle.
// The ops live in csrc/cuda/<op>.cu. The op's front door (mda_fast/ops/op_<op>.py) validates
// arguments; mda_fast/ops/backend_cuda.py allocates outputs/workspaces with torch and calls in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cuda_runtime.h>

#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "ops_cuda.h"

namespace py = pybind11;
using S3 = std::array<int64_t, 3>;

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "mda-fast CUDA ops (fp32 accumulate); call through mda_fast.ops, not directly.";
  using GIL = py::call_guard<py::gil_scoped_release>;
  m.def("project_per_sample_grad",
        [](int dtype, uintptr_t a, S3 sa, uintptr_t g, S3 sg, int64_t B, int64_t T, int64_t I, int64_t O,
           uintptr_t pin, uint32_t pin_seed, int64_t ki, uintptr_t pout, uint32_t pout_seed, int64_t ko,
           uintptr_t out, uintptr_t ws, uintptr_t stream) {
          mdacuda::project_per_sample_grad(dtype, a, sa[0], sa[1], sa[2], g, sg[0], sg[1], sg[2], B, T, I, O, pin,
                                           pin_seed, ki, pout, pout_seed, ko, out, ws, stream);
        },
        GIL());
  m.def("grad_dot_queries",
        [](int dtype, uintptr_t a, S3 sa, uintptr_t g, S3 sg, int64_t B, int64_t T, int64_t I, int64_t O,
           uintptr_t Q, int64_t n, uintptr_t out, const std::string& route, uintptr_t ws, int64_t chunk,
           uintptr_t stream) {
          mdacuda::grad_dot_queries(dtype, a, sa[0], sa[1], sa[2], g, sg[0], sg[1], sg[2], B, T, I, O, Q, n, out,
                                    mda_route::parse_route(route), ws, chunk, stream);
        },
        GIL());
  m.def("ekfac_lambda_accumulate",
        [](int dtype, uintptr_t a, S3 sa, uintptr_t g, S3 sg, int64_t B, int64_t T, int64_t I, int64_t O,
           uintptr_t QA, uintptr_t QS, uintptr_t out, uintptr_t ws, int64_t chunk, uintptr_t stream) {
          mdacuda::ekfac_lambda_accumulate(dtype, a, sa[0], sa[1], sa[2], g, sg[0], sg[1], sg[2], B, T, I, O, QA,
                                           QS, out, ws, chunk, stream);
        },
        GIL());
  using Blk = std::tuple<uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int64_t, int64_t, int64_t, double>;
  m.def("kron_inverse_apply_grouped", [](int dtype, const std::vector<Blk>& blocks, uintptr_t ws, uintptr_t stream) {
    std::vector<mdacuda::KronArgs> args;
    for (const auto& b : blocks)
      args.push_back({std::get<0>(b), std::get<1>(b), std::get<2>(b), std::get<3>(b), std::get<4>(b),
                      std::get<5>(b), std::get<6>(b), std::get<7>(b), std::get<8>(b)});
    py::gil_scoped_release nogil;
    mdacuda::kron_inverse_apply_grouped(dtype, args.data(), static_cast<int64_t>(args.size()), ws, stream);
  });
  m.def("device_count", []() {
    int n = 0;
    return cudaGetDeviceCount(&n) == cudaSuccess ? n : 0;
  });
  m.def("runtime_version", []() {
    int v = 0;
    cudaRuntimeGetVersion(&v);
    return v;
  });
}
