// pybind11 surface of mda_fast._C: raw addresses (tensor.data_ptr()), shapes and element strides.
// The ops live in csrc/cpu/<op>.cpp. No checks beyond null pointers and the route name here: the
// op's front door (mda_fast/ops/op_<op>.py) validates everything before backend_cpp.py calls in.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "gemm.h"
#include "ops.h"
#include "parallel.h"

namespace py = pybind11;
using Strides = std::array<int64_t, 3>;

namespace {

template <class T>
T* ptr(uintptr_t addr, const char* name) {
  if (addr == 0) throw std::invalid_argument(std::string(name) + " is a null pointer");
  return reinterpret_cast<T*>(addr);
}

mda::View3 view(uintptr_t addr, const Strides& s, const char* name) {
  return {ptr<const float>(addr, name), s[0], s[1], s[2]};
}

mda::Proj proj(uintptr_t addr, uint32_t seed) {  // addr 0 = seeded
  return {reinterpret_cast<const float*>(addr), seed};
}

// Build and runtime facts (mda env, tests): SIMD path, threads, compiler; the projection as a matrix.
void bind_info(py::module_& m) {
  m.def("seeded_projection",
        [](int64_t dim, int64_t k, uint32_t seed, uintptr_t out) {
          float* o = ptr<float>(out, "out");
          const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(k)));
          for (int64_t i = 0; i < dim; ++i)
            for (int64_t j = 0; j < k; ++j)
              o[i * k + j] = mda::seeded_entry(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(j), scale);
        },
        "Dense copy of the seeded projection P[dim,k] (tests and debugging).");
  m.def("simd_path", &mda::simd_path, "Micro-kernel in use: 'avx2+fma' or 'generic'.");
  m.def("set_force_generic", &mda::set_force_generic, "Force the portable micro-kernel (tests).");
  m.def("max_threads", &mda::max_threads, "OpenMP default thread count (1 without OpenMP).");
#ifdef _OPENMP
  m.attr("openmp") = true;
#else
  m.attr("openmp") = false;
#endif
#if defined(__clang__)
  m.attr("compiler") = "clang " __clang_version__;
#elif defined(__GNUC__)
  m.attr("compiler") = "gcc " __VERSION__;
#else
  m.attr("compiler") = "unknown";
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "mda-fast CPU ops (fp32, OpenMP); call through mda_fast.ops, not directly.";
  using GIL = py::call_guard<py::gil_scoped_release>;

  m.def("project_per_sample_grad",
        [](uintptr_t a, Strides sa, uintptr_t g, Strides sg, int64_t B, int64_t T, int64_t I, int64_t O,
           uintptr_t pin, uint32_t pin_seed, int64_t ki, uintptr_t pout, uint32_t pout_seed, int64_t ko,
           uintptr_t out, int nthreads) {
          mda::project_per_sample_grad(view(a, sa, "a"), view(g, sg, "g"), B, T, I, O, proj(pin, pin_seed), ki,
                                       proj(pout, pout_seed), ko, ptr<float>(out, "out"), nthreads);
        },
        GIL());
  m.def("grad_dot_queries",
        [](uintptr_t a, Strides sa, uintptr_t g, Strides sg, int64_t B, int64_t T, int64_t I, int64_t O,
           uintptr_t q, int64_t n, uintptr_t out, const std::string& route, int nthreads) {
          mda::grad_dot_queries(view(a, sa, "a"), view(g, sg, "g"), B, T, I, O, ptr<const float>(q, "Q"), n,
                                ptr<float>(out, "out"), mda_route::parse_route(route), nthreads);
        },
        GIL());
  m.def("ekfac_lambda_accumulate",
        [](uintptr_t a, Strides sa, uintptr_t g, Strides sg, int64_t B, int64_t T, int64_t I, int64_t O,
           uintptr_t qa, uintptr_t qs, uintptr_t out, const std::string& route, int nthreads) {
          mda::ekfac_lambda_accumulate(view(a, sa, "a"), view(g, sg, "g"), B, T, I, O, ptr<const float>(qa, "Q_A"),
                                       ptr<const float>(qs, "Q_S"), ptr<float>(out, "out"),
                                       mda_route::parse_route(route), nthreads);
        },
        GIL());
  // blocks: (Q_A, Q_S, lam, V, out, O, I, n, damping) per block.
  using BlockArgs = std::tuple<uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t, int64_t, int64_t, int64_t, double>;
  m.def("kron_inverse_apply_grouped", [](const std::vector<BlockArgs>& blocks, int nthreads) {
    std::vector<mda::KronBlock> kb;
    for (const auto& b : blocks) {
      kb.push_back({ptr<const float>(std::get<0>(b), "Q_A"), ptr<const float>(std::get<1>(b), "Q_S"),
                    ptr<const float>(std::get<2>(b), "lam"), ptr<const float>(std::get<3>(b), "V"),
                    ptr<float>(std::get<4>(b), "out"), std::get<5>(b), std::get<6>(b), std::get<7>(b),
                    std::get<8>(b)});
    }
    py::gil_scoped_release nogil;
    mda::kron_inverse_apply_grouped(kb.data(), static_cast<int64_t>(kb.size()), nthreads);
  });
  bind_info(m);
}
