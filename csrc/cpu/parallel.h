// Work splitting shared by the ops: deterministic for a given thread count.
#pragma once

#include <cstdint>
#include <numeric>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace mda {

// OpenMP default thread count (1 without OpenMP).
inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// How many T-ranges to cut each sample into so that B * nsplit tasks spread evenly over nthreads
// (B=9 on 2 threads -> 2 ranges each; B=1 -> nthreads ranges). Partial results of the ranges are
// summed in a fixed order afterwards, so results do not depend on scheduling.
inline int64_t time_splits(int64_t B, int64_t T, int nthreads) {
  if (nthreads <= 1 || B <= 0) return 1;
  int64_t s = nthreads / std::gcd<int64_t>(B, nthreads);
  if (s > T) s = T > 0 ? T : 1;
  return s;
}

constexpr int64_t TC = 256;  // token chunk: keeps projected chunks (TC x k) in L2

}  // namespace mda
