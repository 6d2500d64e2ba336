// Blocked fp32 GEMM: packing, 6x16 micro-kernels (AVX2/FMA and portable), drivers.
#include "gemm.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MDA_HAVE_X86 1
#endif

namespace mda {

static bool g_force_generic = false;

void set_force_generic(bool on) { g_force_generic = on; }

bool cpu_has_avx2_fma() {
#ifdef MDA_HAVE_X86
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

static bool use_avx2() { return !g_force_generic && cpu_has_avx2_fma(); }

const char* simd_path() { return use_avx2() ? "avx2+fma" : "generic"; }

// ---------------------------------------------------------------- packing
template <class Get>
static void pack_impl(int64_t K, int64_t N, Get get, PackedB& out) {
  out.K = K;
  out.N = N;
  out.npanels = (N + NR - 1) / NR;
  out.buf.assign(static_cast<size_t>(K * out.npanels * NR), 0.0f);
  for (int64_t k0 = 0; k0 < K; k0 += KC) {
    const int64_t kc = out.kc(k0);
    for (int64_t p = 0; p < out.npanels; ++p) {
      float* dst = const_cast<float*>(out.panel(k0, p));
      const int64_t n0 = p * NR, nr = std::min<int64_t>(NR, N - n0);
      for (int64_t kk = 0; kk < kc; ++kk)
        for (int64_t j = 0; j < nr; ++j) dst[kk * NR + j] = get(k0 + kk, n0 + j);
    }
  }
}

void pack_b(int64_t K, int64_t N, const float* src, int64_t rs, int64_t cs, PackedB& out) {
  pack_impl(K, N, [=](int64_t k, int64_t n) { return src[k * rs + n * cs]; }, out);
}

void pack_b_seeded(int64_t dim, int64_t k, uint32_t seed, PackedB& out) {
  // 1/sqrt(k) rounded once from double, like the torch reference.
  const float scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(k)));
  pack_impl(dim, k, [=](int64_t i, int64_t j) {
    return seeded_entry(seed, static_cast<uint32_t>(i), static_cast<uint32_t>(j), scale);
  }, out);
}

// ---------------------------------------------------------------- micro-kernels
// Writes tile (mr x nr valid) to C, adding to it when `acc`.
static inline void store_tile(const float* tile, float* C, int64_t ldc, int mr, int nr, bool acc) {
  for (int r = 0; r < mr; ++r)
    for (int j = 0; j < nr; ++j) C[r * ldc + j] = acc ? C[r * ldc + j] + tile[r * NR + j] : tile[r * NR + j];
}

static void kernel_generic(int64_t kc, const float* A, int64_t rsA, int64_t csA, const float* Bp,
                           float* C, int64_t ldc, int mr, int nr, bool acc) {
  float t[MR * NR] = {0};
  for (int64_t k = 0; k < kc; ++k) {
    const float* b = Bp + k * NR;
    for (int r = 0; r < mr; ++r) {
      const float a = A[r * rsA + k * csA];
      for (int j = 0; j < NR; ++j) t[r * NR + j] += a * b[j];
    }
  }
  store_tile(t, C, ldc, mr, nr, acc);
}

#ifdef MDA_HAVE_X86
__attribute__((target("avx2,fma"))) static void kernel_avx2(int64_t kc, const float* A, int64_t rsA,
                                                            int64_t csA, const float* Bp, float* C,
                                                            int64_t ldc, int mr, int nr, bool acc) {
  // Rows past mr alias row 0 so the loop stays branch-free; their results are dropped.
  const int64_t o1 = mr > 1 ? rsA : 0, o2 = mr > 2 ? 2 * rsA : 0, o3 = mr > 3 ? 3 * rsA : 0;
  const int64_t o4 = mr > 4 ? 4 * rsA : 0, o5 = mr > 5 ? 5 * rsA : 0;
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps();
  __m256 c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps();
  __m256 c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  const float* ap = A;
#pragma GCC unroll 4
  for (int64_t k = 0; k < kc; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
    __m256 a = _mm256_broadcast_ss(ap);
    c00 = _mm256_fmadd_ps(a, b0, c00); c01 = _mm256_fmadd_ps(a, b1, c01);
    a = _mm256_broadcast_ss(ap + o1);
    c10 = _mm256_fmadd_ps(a, b0, c10); c11 = _mm256_fmadd_ps(a, b1, c11);
    a = _mm256_broadcast_ss(ap + o2);
    c20 = _mm256_fmadd_ps(a, b0, c20); c21 = _mm256_fmadd_ps(a, b1, c21);
    a = _mm256_broadcast_ss(ap + o3);
    c30 = _mm256_fmadd_ps(a, b0, c30); c31 = _mm256_fmadd_ps(a, b1, c31);
    a = _mm256_broadcast_ss(ap + o4);
    c40 = _mm256_fmadd_ps(a, b0, c40); c41 = _mm256_fmadd_ps(a, b1, c41);
    a = _mm256_broadcast_ss(ap + o5);
    c50 = _mm256_fmadd_ps(a, b0, c50); c51 = _mm256_fmadd_ps(a, b1, c51);
    ap += csA;
    Bp += NR;
  }
  if (mr == MR && nr == NR) {
    const __m256 rows[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    for (int r = 0; r < MR; ++r) {
      float* c = C + r * ldc;
      __m256 v0 = rows[r][0], v1 = rows[r][1];
      if (acc) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(c));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, v0);
      _mm256_storeu_ps(c + 8, v1);
    }
    return;
  }
  alignas(32) float t[MR * NR];
  _mm256_store_ps(t + 0, c00); _mm256_store_ps(t + 8, c01);
  _mm256_store_ps(t + 16, c10); _mm256_store_ps(t + 24, c11);
  _mm256_store_ps(t + 32, c20); _mm256_store_ps(t + 40, c21);
  _mm256_store_ps(t + 48, c30); _mm256_store_ps(t + 56, c31);
  _mm256_store_ps(t + 64, c40); _mm256_store_ps(t + 72, c41);
  _mm256_store_ps(t + 80, c50); _mm256_store_ps(t + 88, c51);
  store_tile(t, C, ldc, mr, nr, acc);
}
#endif

// ---------------------------------------------------------------- drivers
void gemm_serial(int64_t M, const float* A, int64_t rsA, int64_t csA, const PackedB& B, float* C,
                 int64_t ldc, bool accumulate) {
  const int64_t N = B.N, K = B.K;
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t m = 0; m < M; ++m) std::fill(C + m * ldc, C + m * ldc + N, 0.0f);
    return;
  }
  auto kern = kernel_generic;
#ifdef MDA_HAVE_X86
  if (use_avx2()) kern = kernel_avx2;
#endif
  // A read along k with a stride (g^T, Q_S^T): each k step would touch a new cache line, so an
  // MR x kc strip (6 KiB) is copied k-major first; it then serves every panel of the NC block.
  const bool pack_a = csA != 1;
  alignas(32) float strip[MR * KC];
  for (int64_t n0 = 0; n0 < N; n0 += NC) {
    const int64_t p0 = n0 / NR, p1 = std::min<int64_t>(B.npanels, (n0 + NC) / NR);
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
      const int64_t kc = B.kc(k0);
      const bool acc = accumulate || k0 > 0;
      for (int64_t m0 = 0; m0 < M; m0 += MR) {
        const int mr = static_cast<int>(std::min<int64_t>(MR, M - m0));
        const float* a = A + m0 * rsA + k0 * csA;
        int64_t rs = rsA, cs = csA;
        if (pack_a) {
          for (int64_t k = 0; k < kc; ++k)
            for (int r = 0; r < MR; ++r) strip[k * MR + r] = r < mr ? a[r * rsA + k * csA] : 0.0f;
          a = strip, rs = 1, cs = MR;
        }
        for (int64_t p = p0; p < p1; ++p) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, N - p * NR));
          kern(kc, a, rs, cs, B.panel(k0, p), C + m0 * ldc + p * NR, ldc, mr, nr, acc);
        }
      }
    }
  }
}

void gemm_parallel(int64_t M, const float* A, int64_t rsA, int64_t csA, const PackedB& B, float* C,
                   int64_t ldc, bool accumulate, int nthreads) {
  const int64_t nblk = (M + MR - 1) / MR;
#ifdef _OPENMP
  if (nthreads > 1 && !omp_in_parallel() && nblk >= 2) {
#pragma omp parallel num_threads(nthreads)
    {
      const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
      const int64_t m0 = nblk * t / nt * MR, m1 = std::min<int64_t>(M, nblk * (t + 1) / nt * MR);
      if (m1 > m0) gemm_serial(m1 - m0, A + m0 * rsA, rsA, csA, B, C + m0 * ldc, ldc, accumulate);
    }
    return;
  }
#endif
  (void)nthreads;
  gemm_serial(M, A, rsA, csA, B, C, ldc, accumulate);
}

// ---------------------------------------------------------------- dot
#ifdef MDA_HAVE_X86
__attribute__((target("avx2,fma"))) static float dot_avx2(const float* x, const float* y, int64_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(y + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(y + i + 24), s3);
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  float s = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}
#endif

float dot(const float* x, const float* y, int64_t n) {
#ifdef MDA_HAVE_X86
  if (use_avx2()) return dot_avx2(x, y, n);
#endif
  float p[8] = {0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; ++j) p[j] += x[i + j] * y[i + j];
  float s = ((p[0] + p[1]) + (p[2] + p[3])) + ((p[4] + p[5]) + (p[6] + p[7]));
  for (; i < n; ++i) s += x[i] * y[i];
  return s;
}

}  // namespace mda
