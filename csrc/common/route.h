// The route switch of ops 2 and 3 (grad_dot_queries, ekfac_lambda_accumulate), with the names the
// Python side uses (mda_fast/ops/op_<op>.py `route`, whose docstring holds the FLOP rule):
//   "factored"      work on the factors a, g (op 2: project tokens with Q; op 3: rotate a, g first)
//   "materialized"  build each per-sample gradient G_b = g_b^T a_b [O, I], then contract / rotate it
// Shared by the C++ and CUDA extensions; the bindings take the route as a string.
#pragma once
#include <stdexcept>
#include <string>

namespace mda_route {

enum class Route { kMaterialized, kFactored };

inline Route parse_route(const std::string& route) {
  if (route == "factored") return Route::kFactored;
  if (route == "materialized") return Route::kMaterialized;
  throw std::invalid_argument("route must be 'factored' or 'materialized', got '" + route + "'");
}

}  // namespace mda_route
