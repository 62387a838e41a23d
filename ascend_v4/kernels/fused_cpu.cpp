// Fused CPU kernels of the model's elementwise chains and weight products, for MindSpore's
// ops.Custom(func_type="aot"): one kernel instead of ~40 (block quant-dequant), ~130 (Sinkhorn),
// ~12 (RoPE on a head's last dims) or 6 (RMSNorm) primitives per call. float32 and float64, each
// computed in its own precision with exactly the operation order of the composite graph
// (ascend_v4/numerics.py quant_dequant, ascend_v4/mhc.py sinkhorn_split, ascend_v4/rope.py), so
// results are bit-identical to it where the composite is exact (all of the quantisation and RoPE;
// Sinkhorn up to the libm exp/sigmoid). RMSNorm, the mHC mixes and attention with sinks compute in
// float64 and round once, as the oracle does, instead of the composite's float32 reductions.
//
// aot signature: int Fn(int nparam, void** params, int* ndims, int64_t** shapes,
//                       const char** dtypes, void* stream, void* extra); returns 0 or 1.
#include <cmath>
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#include <immintrin.h>

namespace {

// exact floor(log2(a)) and ceil(log2(a)) for finite a > 0, from frexp: a = m 2^e, m in [0.5, 1)
template <class T> int FloorLog2(T a) { int e; T m = std::frexp(a, &e); (void)m; return e - 1; }
template <class T> int CeilLog2(T a) { int e; T m = std::frexp(a, &e); return m == T(0.5) ? e - 1 : e; }

// attrs: block, max_value, mantissa_bits, min_exponent, amax_floor, ocp_emax (< 0: the release's
// scale 2^ceil(log2(amax / max)); >= 0: the OCP MX scale 2^(floor(log2 amax) - ocp_emax))
template <class T>
void QuantDequant(const T* x, T* y, int64_t rows, int64_t block, const double* attrs) {
    const T max_value = T(attrs[1]);
    const int mbits = int(attrs[2]);
    const int min_exp = int(attrs[3]);
    const T floor = T(attrs[4]);
    const int ocp_emax = int(attrs[5]);
    const T min_normal = std::ldexp(T(1), min_exp);
    for (int64_t r = 0; r < rows; ++r) {
        const T* xb = x + r * block;
        T* yb = y + r * block;
        T amax = 0;
        for (int64_t j = 0; j < block; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
        amax = std::fmax(amax, floor);
        const T scale = ocp_emax >= 0 ? std::ldexp(T(1), FloorLog2(amax) - ocp_emax)
                                      : std::ldexp(T(1), CeilLog2(T(amax / max_value)));
        for (int64_t j = 0; j < block; ++j) {
            T v = xb[j] / scale;
            v = std::fmin(std::fmax(v, -max_value), max_value);
            const T a = std::fmin(std::fabs(v), max_value);
            const T step = std::ldexp(T(1), FloorLog2(std::fmax(a, min_normal)) - mbits);
            T q = std::nearbyint(a / step) * step;                    // round half to even
            q = std::fmin(q, max_value);
            yb[j] = (v > 0 ? q : (v < 0 ? -q : T(0))) * scale;
        }
    }
}

template <class T> T Sigmoid(T v) { return T(1) / (T(1) + std::exp(-v)); }

// mixes [T, (2+n)n], scale [3], base [(2+n)n]; attrs: n, iters, eps -> pre [T, n], post [T, n],
// comb [T, n, n] (row softmax + eps, column normalisation, then iters-1 row/column rounds)
template <class T>
void Sinkhorn(const T* mixes, const T* scale, const T* base, T* pre, T* post, T* comb, int64_t tokens,
              const double* attrs) {
    const int n = int(attrs[0]), iters = int(attrs[1]);
    const T eps = T(attrs[2]);
    const int width = (2 + n) * n;
    for (int64_t t = 0; t < tokens; ++t) {
        const T* m = mixes + t * width;
        T* c = comb + t * n * n;
        for (int i = 0; i < n; ++i) {
            pre[t * n + i] = Sigmoid(T(m[i] * scale[0] + base[i])) + eps;
            post[t * n + i] = T(2) * Sigmoid(T(m[n + i] * scale[1] + base[n + i]));
        }
        for (int i = 0; i < n; ++i) {                                  // softmax over each row
            T* row = c + i * n;
            T mx = -INFINITY;
            for (int j = 0; j < n; ++j) {
                row[j] = m[2 * n + i * n + j] * scale[2] + base[2 * n + i * n + j];
                mx = std::fmax(mx, row[j]);
            }
            T sum = 0;
            for (int j = 0; j < n; ++j) { row[j] = std::exp(row[j] - mx); sum += row[j]; }
            for (int j = 0; j < n; ++j) row[j] = row[j] / sum + eps;
        }
        auto columns = [&] {
            for (int j = 0; j < n; ++j) {
                T sum = 0;
                for (int i = 0; i < n; ++i) sum += c[i * n + j];
                for (int i = 0; i < n; ++i) c[i * n + j] = c[i * n + j] / (sum + eps);
            }
        };
        columns();
        for (int k = 0; k < iters - 1; ++k) {
            for (int i = 0; i < n; ++i) {
                T sum = 0;
                for (int j = 0; j < n; ++j) sum += c[i * n + j];
                for (int j = 0; j < n; ++j) c[i * n + j] = c[i * n + j] / (sum + eps);
            }
            columns();
        }
    }
}

// ---- mHC around a sublayer (few tokens: decode) --------------------------------------------
// X [T, n, d], fn [(2+n)n, n d]; attrs: n, iters, hc_eps, norm_eps -> u [T, d] = sum_i pre_i X_i,
// post [T, n], comb [T, n, n]. mixes = (flatten(X) . fn_r) / sqrt(mean(x^2) + norm_eps): the dot
// products and the norm in float64, rounded once to T (the oracle's _mixes up to its T matmul),
// then the Sinkhorn split above and u in T in stream order. Each mix sums in stream order; kMixRows
// of them advance together (independent adds keep the pipeline full: the same sums; a
// reference-tiny decode call took ~70 us as one float64 chain, ~30 us this way).
constexpr int kMixRows = 8;
template <class T>
void HcPre(const T* X, const T* fn, const T* scale, const T* base, T* u, T* pre, T* post, T* comb,
           int64_t tokens, int64_t d, const double* attrs) {
    const int n = int(attrs[0]);
    const int width = (2 + n) * n;
    const int64_t k = n * d;
    T* mixes = new T[width];
    const double sink_attrs[3] = {attrs[0], attrs[1], attrs[2]};
    for (int64_t t = 0; t < tokens; ++t) {
        const T* x = X + t * k;
        double sq = 0;
        for (int64_t i = 0; i < k; ++i) sq += double(x[i]) * double(x[i]);
        const double root = std::sqrt(sq / double(k) + attrs[3]);
        int r = 0;
        for (; r + kMixRows <= width; r += kMixRows) {          // kMixRows independent sums at once
            double acc[kMixRows] = {};
            for (int64_t i = 0; i < k; ++i)
                for (int j = 0; j < kMixRows; ++j) acc[j] += double(x[i]) * double(fn[(r + j) * k + i]);
            for (int j = 0; j < kMixRows; ++j) mixes[r + j] = T(acc[j] / root);
        }
        for (; r < width; ++r) {
            const T* w = fn + r * k;
            double acc = 0;
            for (int64_t i = 0; i < k; ++i) acc += double(x[i]) * double(w[i]);
            mixes[r] = T(acc / root);
        }
        Sinkhorn(mixes, scale, base, pre + t * n, post + t * n, comb + t * n * n, 1, sink_attrs);
        T* ut = u + t * d;
        for (int64_t j = 0; j < d; ++j) {
            T acc = 0;
            for (int i = 0; i < n; ++i) acc += pre[t * n + i] * x[i * d + j];
            ut[j] = acc;
        }
    }
    delete[] mixes;
}

// f [T, d], X [T, n, d], post [T, n], comb [T, n, n] -> Y [T, n, d],
// Y_j = post_j f + sum_i comb[i, j] X_i (in T, stream order)
template <class T>
void HcPost(const T* f, const T* X, const T* post, const T* comb, T* Y, int64_t tokens, int64_t n, int64_t d) {
    for (int64_t t = 0; t < tokens; ++t) {
        const T* x = X + t * n * d;
        const T* c = comb + t * n * n;
        for (int64_t j = 0; j < n; ++j) {
            T* y = Y + (t * n + j) * d;
            const T pj = post[t * n + j];
            for (int64_t e = 0; e < d; ++e) {
                T acc = 0;
                for (int64_t i = 0; i < n; ++i) acc += c[i * n + j] * x[i * d + e];
                y[e] = pj * f[t * d + e] + acc;
            }
        }
    }
}

// ---- weight-quant matmul: y = x @ dequant(W)^T with W in its checkpoint format -------------
// The CPU counterpart of Ascend's weight-quant matmuls (WeightQuantBatchMatmul: bf16/fp8 weights
// dequantised per tile inside the kernel; GroupedMatmul for expert tiles). Each weight row is
// dequantised once into a buffer in the compute dtype (table value x ue8m0 block scale: the same
// exact products as StoredWeight._dequant), then dotted with every activation row in 8 fixed lanes.
enum WeightKind { kBf16 = 0, kFp8 = 1, kFp4 = 2 };
constexpr int64_t kFp8Block = 128, kFp4Block = 32, kLanes = 8;

template <class T> struct CodeTables {
    T fp8[256];          // e4m3 code -> value (the two NaN codes -> 0, as weights.fp8_code_values)
    T fp4[16];           // e2m1 nibble -> value
    T e8m0[256];         // ue8m0 exponent byte -> 2^(e - 127) (255 -> 0)
    CodeTables() {
        for (int b = 0; b < 256; ++b) {
            const int sign = b >> 7, e = (b >> 3) & 15, m = b & 7;
            double v = e == 0 ? std::ldexp(double(m), -9) : std::ldexp(1.0 + m / 8.0, e - 7);
            if (e == 15 && m == 7) v = 0.0;
            fp8[b] = T(sign ? -v : v);
            e8m0[b] = b < 255 ? T(std::ldexp(1.0, b - 127)) : T(0);
        }
        static const double kFp4[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
        for (int b = 0; b < 16; ++b) fp4[b] = T(b & 8 ? -kFp4[b & 7] : kFp4[b & 7]);
    }
};

template <class T> const CodeTables<T>& Tables() { static const CodeTables<T> t; return t; }

template <class T> T Bf16Value(uint16_t bits) {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return T(f);
}

// row n of one weight matrix [N, K] -> w [K] in T; codes/scale point at this matrix
template <class T>
void DequantRow(int kind, const void* codes, const uint8_t* scale, int64_t n, int64_t N, int64_t K, T* w) {
    const CodeTables<T>& t = Tables<T>();
    if (kind == kBf16) {
        const uint16_t* c = static_cast<const uint16_t*>(codes) + n * K;
        for (int64_t k = 0; k < K; ++k) w[k] = Bf16Value<T>(c[k]);
    } else if (kind == kFp8) {
        const uint8_t* c = static_cast<const uint8_t*>(codes) + n * K;
        const int64_t kb = (K + kFp8Block - 1) / kFp8Block;
        const uint8_t* s = scale + (n / kFp8Block) * kb;
        for (int64_t k = 0; k < K; ++k) w[k] = t.fp8[c[k]] * t.e8m0[s[k / kFp8Block]];
    } else {                                                  // two e2m1 per byte, low nibble first
        const uint8_t* c = static_cast<const uint8_t*>(codes) + n * (K / 2);
        const uint8_t* s = scale + n * (K / kFp4Block);
        for (int64_t k = 0; k < K; k += 2) {
            const T sc = t.e8m0[s[k / kFp4Block]];
            w[k] = t.fp4[c[k / 2] & 15] * sc;
            w[k + 1] = t.fp4[c[k / 2] >> 4] * sc;
        }
    }
    (void)N;
}

// x [M, K] @ dequant(rows n0 .. n0+N of W [., K])^T -> y [M, N]
template <class T>
void WeightProductScalar(int kind, const T* x, int64_t M, int64_t K, const void* codes, const uint8_t* scale,
                   int64_t n0, int64_t N, T* y, T* w) {
    for (int64_t n = 0; n < N; ++n) {
        DequantRow(kind, codes, scale, n0 + n, N, K, w);
        for (int64_t m = 0; m < M; ++m) {
            const T* xr = x + m * K;
            T lane[kLanes] = {};
            int64_t k = 0;
            for (; k + kLanes <= K; k += kLanes)
                for (int64_t l = 0; l < kLanes; ++l) lane[l] += xr[k + l] * w[k + l];
            for (int64_t l = 0; k < K; ++k, ++l) lane[l] += xr[k] * w[k];
            T sum = 0;
            for (int64_t l = 0; l < kLanes; ++l) sum += lane[l];
            y[m * N + n] = sum;
        }
    }
}

// ---- the same product with AVX2 for float32 (no FMA, -ffp-contract=off: bit-identical) -----
// One 8-float vector is the 8 lanes: lane l sums k = l mod 8 in k order. Codes decode by their bits
// (the same values as CodeTables): e4m3 normal codes shift into a float32's exponent (bias 7 ->
// 127) and mantissa, subnormal ones are m x 2^-9, the NaN codes +-0; bf16 is the high half.
constexpr int kRowBlock = 4;   // weight rows decoded and dotted together (independent adds)

__attribute__((target("avx2"))) inline __m256 Fp8x8(const uint8_t* c) {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(c)));
    const __m256i mag = _mm256_and_si256(b, _mm256_set1_epi32(0x7f));
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(b, _mm256_set1_epi32(0x80)), 24);
    const __m256 normal = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_slli_epi32(mag, 20), _mm256_set1_epi32(120 << 23)));
    const __m256 sub = _mm256_mul_ps(_mm256_cvtepi32_ps(mag), _mm256_set1_ps(0x1p-9f));
    const __m256 is_sub = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(8), mag));
    const __m256 is_nan = _mm256_castsi256_ps(_mm256_cmpeq_epi32(mag, _mm256_set1_epi32(0x7f)));
    const __m256 v = _mm256_andnot_ps(is_nan, _mm256_blendv_ps(normal, sub, is_sub));
    return _mm256_or_ps(v, _mm256_castsi256_ps(sign));
}

__attribute__((target("avx2"))) inline __m256 Bf16x8(const uint16_t* c) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(c));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

// 8 e2m1 codes (4 bytes, low nibble first): magnitude by an 8-entry permute, sign bit or-ed
__attribute__((target("avx2"))) inline __m256 Fp4x8(const uint8_t* c) {
    int32_t four;
    std::memcpy(&four, c, 4);
    const __m128i b = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(four));
    const __m128i lo = _mm_and_si128(b, _mm_set1_epi32(15)), hi = _mm_srli_epi32(b, 4);
    const __m256i n = _mm256_set_m128i(_mm_unpackhi_epi32(lo, hi), _mm_unpacklo_epi32(lo, hi));
    const __m256 magnitude = _mm256_permutevar8x32_ps(_mm256_setr_ps(0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f), n);
    const __m256i sign = _mm256_slli_epi32(_mm256_and_si256(n, _mm256_set1_epi32(8)), 28);
    return _mm256_or_ps(magnitude, _mm256_castsi256_ps(sign));
}

// row n of W -> w [K] (K % 8 == 0 for the vector path; else the scalar DequantRow)
__attribute__((target("avx2"))) void DequantRowAvx2(int kind, const void* codes, const uint8_t* scale, int64_t n,
                                                    int64_t N, int64_t K, float* w) {
    if (K % 8) return DequantRow(kind, codes, scale, n, N, K, w);
    if (kind == kBf16) {
        const uint16_t* c = static_cast<const uint16_t*>(codes) + n * K;
        for (int64_t k = 0; k < K; k += 8) _mm256_storeu_ps(w + k, Bf16x8(c + k));
        return;
    }
    const CodeTables<float>& t = Tables<float>();
    if (kind == kFp4) {                                        // K % 32 == 0 (checked by the caller)
        const uint8_t* c = static_cast<const uint8_t*>(codes) + n * (K / 2);
        const uint8_t* s = scale + n * (K / kFp4Block);
        for (int64_t k = 0; k < K; k += 8)
            _mm256_storeu_ps(w + k, _mm256_mul_ps(Fp4x8(c + k / 2), _mm256_set1_ps(t.e8m0[s[k / kFp4Block]])));
        return;
    }
    const uint8_t* c = static_cast<const uint8_t*>(codes) + n * K;
    const uint8_t* s = scale + (n / kFp8Block) * ((K + kFp8Block - 1) / kFp8Block);
    for (int64_t k = 0; k < K; k += 8)
        _mm256_storeu_ps(w + k, _mm256_mul_ps(Fp8x8(c + k), _mm256_set1_ps(t.e8m0[s[k / kFp8Block]])));
}

// y[i] = x . w_i for kRowBlock rows of w [kRowBlock, K]
__attribute__((target("avx2"))) inline void DotRowsAvx2(const float* x, const float* w, int64_t K, int rows, float* y) {
    __m256 acc[kRowBlock] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t k = 0;
    if (rows == kRowBlock) {
        for (; k + 8 <= K; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            for (int i = 0; i < kRowBlock; ++i)
                acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(xv, _mm256_loadu_ps(w + i * K + k)));
        }
    } else {
        for (; k + 8 <= K; k += 8) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            for (int i = 0; i < rows; ++i)
                acc[i] = _mm256_add_ps(acc[i], _mm256_mul_ps(xv, _mm256_loadu_ps(w + i * K + k)));
        }
    }
    for (int i = 0; i < rows; ++i) {
        alignas(32) float lane[8];
        _mm256_store_ps(lane, acc[i]);
        for (int64_t j = k, l = 0; j < K; ++j, ++l) lane[l] += x[j] * w[i * K + j];
        float sum = 0;
        for (int l = 0; l < 8; ++l) sum += lane[l];
        y[i] = sum;
    }
}

__attribute__((target("avx2"))) void WeightProductAvx2(int kind, const float* x, int64_t M, int64_t K,
                                                       const void* codes, const uint8_t* scale, int64_t n0,
                                                       int64_t N, float* y, float* w) {
    float out[kRowBlock];
    for (int64_t n = 0; n < N; n += kRowBlock) {
        const int rows = int(std::min<int64_t>(kRowBlock, N - n));
        for (int i = 0; i < rows; ++i) DequantRowAvx2(kind, codes, scale, n0 + n + i, N, K, w + i * K);
        for (int64_t m = 0; m < M; ++m) {
            DotRowsAvx2(x + m * K, w, K, rows, out);
            for (int i = 0; i < rows; ++i) y[m * N + n + i] = out[i];
        }
    }
}

// the AVX2 paths run where the CPU has AVX2 and SetVectorPaths(0) did not turn them off (tests)
bool g_vector_paths = true;
bool UseAvx2() {
    static const bool avx2 = __builtin_cpu_supports("avx2");
    return avx2 && g_vector_paths;
}

// DequantRow, with the AVX2 decode for float32 where the CPU has it (the same values)
template <class T>
void DequantRowFast(int kind, const void* codes, const uint8_t* scale, int64_t n, int64_t N, int64_t K, T* w) {
    if constexpr (std::is_same<T, float>::value) {
        if (UseAvx2()) return DequantRowAvx2(kind, codes, scale, n, N, K, w);
    }
    DequantRow(kind, codes, scale, n, N, K, w);
}

template <class T>
void WeightProduct(int kind, const T* x, int64_t M, int64_t K, const void* codes, const uint8_t* scale,
                   int64_t n0, int64_t N, T* y, T* w) {
    if constexpr (std::is_same<T, float>::value) {
        if (UseAvx2()) return WeightProductAvx2(kind, x, M, K, codes, scale, n0, N, y, w);
    }
    WeightProductScalar(kind, x, M, K, codes, scale, n0, N, y, w);
}

// bytes of one [N, K] matrix's codes and scales in format `kind`
int64_t CodeBytes(int kind, int64_t N, int64_t K) { return kind == kBf16 ? 2 * N * K : kind == kFp8 ? N * K : N * K / 2; }
int64_t ScaleBytes(int kind, int64_t N, int64_t K) {
    if (kind == kFp8) return ((N + kFp8Block - 1) / kFp8Block) * ((K + kFp8Block - 1) / kFp8Block);
    return kind == kFp4 ? N * (K / kFp4Block) : 0;
}

// x [T, M, K] -> y [T, M, N]. experts (index set): x[t] through matrix index[t] of a stack [E, N, K];
template <class T>
int WeightProductAll(int kind, const T* x, int64_t tiles, int64_t M, int64_t K, const int32_t* index, int64_t E,
                     const void* codes, const uint8_t* scale, int64_t N, T* y) {
    T* w = new T[kRowBlock * K];
    const int64_t cb = CodeBytes(kind, N, K), sb = ScaleBytes(kind, N, K);
    int rc = 0;
    for (int64_t t = 0; t < tiles && rc == 0; ++t) {
        const int64_t e = index ? index[t] : 0;
        if (e < 0 || e >= E) { rc = 1; break; }
        WeightProduct(kind, x + t * M * K, M, K, static_cast<const uint8_t*>(codes) + e * cb,
                      sb ? scale + e * sb : nullptr, index ? 0 : t * N, N, y + t * M * N, w);
    }
    delete[] w;
    return rc;
}

// Row groups in the activation's own layout: x [M, G, K], y [M, G, N], x[m, g] through rows
// g*N .. (g+1)*N of one matrix [G*N, K] (the attention's wo_a on [tokens, groups, K] without
// transposing); each group's rows are copied out and back, the products as WeightProduct.
template <class T>
void WeightProductGroups(int kind, const T* x, int64_t M, int64_t G, int64_t K, const void* codes,
                         const uint8_t* scale, int64_t N, T* y) {
    T* w = new T[kRowBlock * K];
    T* xg = new T[M * K];
    T* yg = new T[M * N];
    for (int64_t g = 0; g < G; ++g) {
        for (int64_t m = 0; m < M; ++m) std::memcpy(xg + m * K, x + (m * G + g) * K, K * sizeof(T));
        WeightProduct(kind, xg, M, K, static_cast<const uint8_t*>(codes), scale, g * N, N, yg, w);
        for (int64_t m = 0; m < M; ++m) std::memcpy(y + (m * G + g) * N, yg + m * N, N * sizeof(T));
    }
    delete[] yg;
    delete[] xg;
    delete[] w;
}

// ---- RoPE on the last rd dims, RMSNorm ------------------------------------------------------
// x [R, H, D]: each of the R rows' H heads rotated by the row's angles cos/sin [R, rd/2] on its
// interleaved pairs D-rd.., the first D-rd dims copied; inverse rotates by -angle. Operation
// order as rope.apply_rope: y0 = x0 cos - x1 sin, y1 = x0 sin + x1 cos (products rounded each).
template <class T>
void Rope(const T* x, const T* cos, const T* sin, T* y, int64_t R, int64_t H, int64_t D, int64_t rd, bool inverse) {
    const int64_t half = rd / 2, nope = D - rd;
    for (int64_t r = 0; r < R; ++r) {
        const T* c = cos + r * half;
        const T* sn = sin + r * half;
        for (int64_t h = 0; h < H; ++h) {
            const T* xi = x + (r * H + h) * D;
            T* yo = y + (r * H + h) * D;
            for (int64_t i = 0; i < nope; ++i) yo[i] = xi[i];
            for (int64_t i = 0; i < half; ++i) {
                const T s = inverse ? -sn[i] : sn[i];
                const T x0 = xi[nope + 2 * i], x1 = xi[nope + 2 * i + 1];
                const T a = x0 * c[i], b = x1 * s, e = x0 * s, f = x1 * c[i];
                yo[nope + 2 * i] = a - b;
                yo[nope + 2 * i + 1] = e + f;
            }
        }
    }
}

// x [R, d] -> x / sqrt(mean(x^2) + eps) (* weight [d]): the mean and the division in float64
// whatever T, one rounding to T, then the weight's product in T (as the oracle's rms_norm; the
// composite's float32 ReduceMean differs from both in the last bits)
template <class T>
void RmsNorm(const T* x, const T* weight, T* y, int64_t R, int64_t d, double eps) {
    for (int64_t r = 0; r < R; ++r) {
        const T* xi = x + r * d;
        T* yo = y + r * d;
        double sum = 0;
        for (int64_t i = 0; i < d; ++i) sum += double(xi[i]) * double(xi[i]);
        const double root = std::sqrt(sum / double(d) + eps);
        for (int64_t i = 0; i < d; ++i) {
            const T v = T(double(xi[i]) / root);
            yo[i] = weight ? T(v * weight[i]) : v;
        }
    }
}

// ---- attention with sinks (few queries: decode) -------------------------------------------
// q [B, S, H, D]; the keys (= values) in segments, segment g: keys [B, N_g, D], mask [B, S, N_g]
// (the window ring, the chunk, the compressed entries: attended as their concatenation in segment
// order, without building it); sink [H] -> o [B, S, H, D]:
// o = sum_e exp(z_e - m) k_e / (sum_e exp(z_e - m) + exp(sink - m)), z = (q . k_e) scale over the
// visible keys, m = max(max_e z_e, sink); all in float64 (dot products in 8 fixed lanes), rounded
// once to T (the oracle's sparse_attention)
template <class T>
struct KeySegment {
    const T* keys;
    const uint8_t* mask;
    int64_t n;
};

template <class T>
void SinkAttention(const T* q, const std::vector<KeySegment<T>>& segments, const T* sink, T* out, int64_t B,
                   int64_t S, int64_t H, int64_t D, double scale) {
    int64_t N = 0;
    for (const auto& g : segments) N += g.n;
    std::vector<double> z(N), o(D);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t s = 0; s < S; ++s)
            for (int64_t h = 0; h < H; ++h) {
                const T* qv = q + ((b * S + s) * H + h) * D;
                double m = double(sink[h]);
                int64_t at = 0;
                for (const auto& g : segments) {
                    const uint8_t* vis = g.mask + (b * S + s) * g.n;
                    for (int64_t e = 0; e < g.n; ++e, ++at) {
                        if (!vis[e]) continue;
                        const T* kv = g.keys + (b * g.n + e) * D;
                        double lane[kLanes] = {};
                        int64_t i = 0;
                        for (; i + kLanes <= D; i += kLanes)
                            for (int64_t l = 0; l < kLanes; ++l) lane[l] += double(qv[i + l]) * double(kv[i + l]);
                        for (int64_t l = 0; i < D; ++i, ++l) lane[l] += double(qv[i]) * double(kv[i]);
                        double dot = 0;
                        for (int64_t l = 0; l < kLanes; ++l) dot += lane[l];
                        z[at] = dot * scale;
                        m = std::fmax(m, z[at]);
                    }
                }
                double den = std::exp(double(sink[h]) - m);
                for (int64_t i = 0; i < D; ++i) o[i] = 0;
                at = 0;
                for (const auto& g : segments) {
                    const uint8_t* vis = g.mask + (b * S + s) * g.n;
                    for (int64_t e = 0; e < g.n; ++e, ++at) {
                        if (!vis[e]) continue;
                        const double p = std::exp(z[at] - m);
                        den += p;
                        const T* kv = g.keys + (b * g.n + e) * D;
                        for (int64_t i = 0; i < D; ++i) o[i] += p * double(kv[i]);
                    }
                }
                T* ov = out + ((b * S + s) * H + h) * D;
                for (int64_t i = 0; i < D; ++i) ov[i] = T(o[i] / den);
            }
}

// One decode token per row into the compressor (ascend_v4/compressor.py Compressor.extend, n = 1):
// kv, gate [B, C*D] (gate before the position bias ape [M, C*D]), state kv_state / score_state
// [B, C*M, C*D], start / count int32 [B] -> pooled [B, D] (the entry of the token's block when the
// token completes it, else 0: the caller keeps complete entries only), new kv_state / score_state.
// The block buffer holds the stored rows [0, prev + r0), the token at prev + r0 and empty rows (kv 0,
// score -inf) after it; with overlap (C = 2, prev = M) window row w < M reads channels [0, D) of
// buffer row w, row w >= M channels [D, 2D). Softmax pooling over the window in float64, rounded
// once (the oracle's pool_blocks).
template <class T>
void CompressorDecode(const T* kv, const T* gate, const T* ape, const T* kv_state, const T* score_state,
                      const int32_t* start, const int32_t* count, T* pooled, T* kv_out, T* score_out,
                      int64_t B, int64_t M, int64_t C, int64_t D) {
    const int64_t W = C * D, rows = C * M, prev = (C - 1) * M, length = prev + M;
    const T neg_inf = -std::numeric_limits<T>::infinity();
    T* buf_kv = new T[length * W];
    T* buf_s = new T[length * W];
    double* e = new double[length];
    for (int64_t b = 0; b < B; ++b) {
        const int64_t pos = start[b], cnt = count[b], r0 = pos % M;
        const T* kb = kv + b * W;
        const T* gb = gate + b * W;
        const T* ks = kv_state + b * rows * W;
        const T* ss = score_state + b * rows * W;
        for (int64_t u = 0; u < length; ++u) {
            T* bk = buf_kv + u * W;
            T* bs = buf_s + u * W;
            if (u < prev + r0) {
                std::memcpy(bk, ks + u * W, W * sizeof(T));
                std::memcpy(bs, ss + u * W, W * sizeof(T));
            } else if (u == prev + r0 && cnt > 0) {
                const T* a = ape + r0 * W;
                for (int64_t j = 0; j < W; ++j) { bk[j] = kb[j]; bs[j] = T(gb[j] + a[j]); }
            } else {
                for (int64_t j = 0; j < W; ++j) { bk[j] = T(0); bs[j] = neg_inf; }
            }
        }
        for (int64_t j = 0; j < D; ++j) {
            if (cnt == 0 || r0 != M - 1) { pooled[b * D + j] = T(0); continue; }   // no entry yet
            double m = -std::numeric_limits<double>::infinity();
            for (int64_t w = 0; w < length; ++w) {
                const int64_t ch = (C == 2 && w >= M) ? D + j : j;
                m = std::fmax(m, double(buf_s[w * W + ch]));
            }
            double den = 0;
            for (int64_t w = 0; w < length; ++w) {
                const int64_t ch = (C == 2 && w >= M) ? D + j : j;
                e[w] = std::exp(double(buf_s[w * W + ch]) - m);
                den += e[w];
            }
            double acc = 0;
            for (int64_t w = 0; w < length; ++w) {
                const int64_t ch = (C == 2 && w >= M) ? D + j : j;
                acc += e[w] / den * double(buf_kv[w * W + ch]);
            }
            pooled[b * D + j] = T(acc);
        }
        // the partial block after the token (and, with overlap, the block before it)
        const int64_t end = pos + cnt, r1 = end % M, first = pos - r0, shift = end - r1 - first;
        T* ko = kv_out + b * rows * W;
        T* so = score_out + b * rows * W;
        for (int64_t v = 0; v < rows; ++v) {
            if (cnt == 0) {
                std::memcpy(ko + v * W, ks + v * W, W * sizeof(T));
                std::memcpy(so + v * W, ss + v * W, W * sizeof(T));
            } else if (v < prev + r1 && end - r1 - prev + v >= 0) {
                const int64_t src = std::min(std::max(v + shift, int64_t(0)), length - 1);
                std::memcpy(ko + v * W, buf_kv + src * W, W * sizeof(T));
                std::memcpy(so + v * W, buf_s + src * W, W * sizeof(T));
            } else {
                for (int64_t j = 0; j < W; ++j) { ko[v * W + j] = T(0); so[v * W + j] = neg_inf; }
            }
        }
    }
    delete[] buf_kv;
    delete[] buf_s;
    delete[] e;
}

int64_t Numel(int nd, const int64_t* shape) {
    int64_t k = 1;
    for (int d = 0; d < nd; ++d) k *= shape[d];
    return k;
}

bool IsF64(const char* dt) { return std::strcmp(dt, "float64") == 0; }

// ---- MoE: the router's weights and experts, SwiGLU ------------------------------------------
// The gate's routing as the oracle's moe.gate: scores of the logits in float64 (0 softmax,
// 1 sigmoid, 2 sqrtsoftplus = sqrt(log(1 + e^z))); score routing takes the top k of score + bias,
// descending, the lower expert first on ties; hash routing gets its experts in `index`. Weights:
// the chosen scores, renormalised (not softmax), times route_scale, rounded once to T.
// logits [R, E], bias [E], index int32 [R, k] (in: hash experts; out: the chosen experts), w [R, k]
template <class T>
int Route(const T* logits, const T* bias, int32_t* index, T* w, int64_t R, int64_t E, int64_t k, int func,
          bool hash, double route_scale) {
    double* score = new double[E];
    bool* taken = new bool[E];
    int rc = 0;
    for (int64_t r = 0; r < R && rc == 0; ++r) {
        const T* z = logits + r * E;
        double mx = -std::numeric_limits<double>::infinity(), den = 0;
        if (func == 0) {
            for (int64_t e = 0; e < E; ++e) mx = std::fmax(mx, double(z[e]));
            for (int64_t e = 0; e < E; ++e) { score[e] = std::exp(double(z[e]) - mx); den += score[e]; }
            for (int64_t e = 0; e < E; ++e) score[e] /= den;
        } else if (func == 1) {
            for (int64_t e = 0; e < E; ++e) score[e] = 1.0 / (1.0 + std::exp(-double(z[e])));
        } else {                                             // log(1 + e^z) = max(z, 0) + log1p(e^-|z|)
            for (int64_t e = 0; e < E; ++e) {
                const double v = double(z[e]);
                score[e] = std::sqrt(std::fmax(v, 0.0) + std::log1p(std::exp(-std::fabs(v))));
            }
        }
        int32_t* idx = index + r * k;
        if (!hash) {
            for (int64_t e = 0; e < E; ++e) taken[e] = false;
            for (int64_t j = 0; j < k; ++j) {
                int64_t best = -1;
                double best_v = 0;
                for (int64_t e = 0; e < E; ++e) {
                    const double v = score[e] + double(bias[e]);
                    if (!taken[e] && (best < 0 || v > best_v)) { best = e; best_v = v; }
                }
                taken[best] = true;
                idx[j] = int32_t(best);
            }
        }
        double sum = 0;
        for (int64_t j = 0; j < k; ++j) {
            if (idx[j] < 0 || idx[j] >= E) { rc = 1; break; }
            sum += score[idx[j]];
        }
        for (int64_t j = 0; j < k && rc == 0; ++j)
            w[r * k + j] = T((func == 0 ? score[idx[j]] : score[idx[j]] / sum) * route_scale);
    }
    delete[] score;
    delete[] taken;
    return rc;
}

// h = silu(min(gate, L)) * clamp(up, -L, L) (L = 0: no clamp) [* weight of the row], silu in float64
// rounded once (the oracle's silu), the products in T. gate / up / h [R, I], weight [R] or null
template <class T>
void SwiGlu(const T* gate, const T* up, const T* weight, T* h, int64_t R, int64_t I, double limit) {
    for (int64_t r = 0; r < R; ++r)
        for (int64_t i = 0; i < I; ++i) {
            T g = gate[r * I + i], u = up[r * I + i];
            if (limit > 0) {
                g = std::fmin(g, T(limit));
                u = std::fmin(std::fmax(u, T(-limit)), T(limit));
            }
            const T silu = T(double(g) / (1.0 + std::exp(-double(g))));
            h[r * I + i] = weight ? T(silu * u) * weight[r] : T(silu * u);
        }
}

}  // namespace

// each row's first `width` of K dims quant-dequantised in blocks, the other K - width copied
template <class T>
void QuantDequantPrefix(const T* x, T* y, int64_t rows, int64_t K, int64_t width, int64_t block, const double* attrs) {
    for (int64_t r = 0; r < rows; ++r) {
        QuantDequant(x + r * K, y + r * K, width / block, block, attrs);
        for (int64_t j = width; j < K; ++j) y[r * K + j] = x[r * K + j];
    }
}

// params: x [..., K], attrs float64 [6] (or [7]: + width, the leading dims of each row that are
// quantised, the rest copied: a KV entry's nope dims before its RoPE dims), y [..., K];
// block = attrs[0] divides K (width)
extern "C" __attribute__((visibility("default"))) int QuantDequantAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void*, void*) {
    if (nparam != 3 || std::strcmp(dtypes[1], "float64") != 0) return 1;
    const double* attrs = static_cast<const double*>(params[1]);
    const int64_t block = int64_t(attrs[0]);
    const int64_t total = Numel(ndims[0], shapes[0]), K = shapes[0][ndims[0] - 1];
    const int64_t width = Numel(ndims[1], shapes[1]) > 6 ? int64_t(attrs[6]) : K;
    if (block <= 0 || width % block || width > K || width < 0) return 1;
    if (width < K) {
        if (IsF64(dtypes[0]))
            QuantDequantPrefix(static_cast<const double*>(params[0]), static_cast<double*>(params[2]), total / K, K, width,
                               block, attrs);
        else
            QuantDequantPrefix(static_cast<const float*>(params[0]), static_cast<float*>(params[2]), total / K, K, width,
                               block, attrs);
        return 0;
    }
    if (IsF64(dtypes[0]))
        QuantDequant(static_cast<const double*>(params[0]), static_cast<double*>(params[2]), total / block, block, attrs);
    else
        QuantDequant(static_cast<const float*>(params[0]), static_cast<float*>(params[2]), total / block, block, attrs);
    return 0;
}

// params: mixes [T, (2+n)n], scale [3], base [(2+n)n], attrs float64 [3], pre, post, comb
extern "C" __attribute__((visibility("default"))) int SinkhornSplitAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                                void*, void*) {
    if (nparam != 7 || std::strcmp(dtypes[3], "float64") != 0) return 1;
    const double* attrs = static_cast<const double*>(params[3]);
    const int n = int(attrs[0]);
    if (ndims[0] != 2 || shapes[0][1] != (2 + n) * n) return 1;
    const int64_t tokens = shapes[0][0];
    if (IsF64(dtypes[0]))
        Sinkhorn(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]),
                 static_cast<const double*>(params[2]), static_cast<double*>(params[4]), static_cast<double*>(params[5]),
                 static_cast<double*>(params[6]), tokens, attrs);
    else
        Sinkhorn(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
                 static_cast<const float*>(params[2]), static_cast<float*>(params[4]), static_cast<float*>(params[5]),
                 static_cast<float*>(params[6]), tokens, attrs);
    return 0;
}

// 0: the weight kernels take their scalar loops (the reference for the AVX2 paths in tests)
extern "C" __attribute__((visibility("default"))) void SetVectorPaths(int on) { g_vector_paths = on != 0; }

// Weight-quant matmul of one matrix, of row groups of one matrix, or of gathered experts.
// params (attrs float64 [1] = kind):
//   plain:   x [M, K], codes [N, Kc], scale, attrs, y [M, N]
//   grouped: x [M, G, K], codes [G*N, Kc], scale, attrs, y [M, G, N] (group g: rows g*N ..)
//   experts: x [T, M, K], index int32 [T], codes [E, N, Kc], scale [E, ..], attrs, y [T, M, N]
// codes: bf16 bits (uint16 or bfloat16) [.., N, K] | fp8 uint8 [.., N, K] | fp4 uint8 [.., N, K/2];
// scale: uint8 ue8m0 [.., ceil(N/128), ceil(K/128)] (fp8) | [.., N, K/32] (fp4) | any (bf16, unused)
extern "C" __attribute__((visibility("default"))) int WeightMatmulAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void*, void*) {
    const bool experts = nparam == 6;
    if (nparam != 5 && !experts) return 1;
    const int xi = 0, ci = experts ? 2 : 1, si = ci + 1, ai = ci + 2, yi = ci + 3;
    if (std::strcmp(dtypes[ai], "float64") != 0) return 1;
    const int kind = int(static_cast<const double*>(params[ai])[0]);
    const int xd = ndims[xi], cd = ndims[ci];
    if (cd != (experts ? 3 : 2) || (experts && xd != 3) || xd < 2 || xd > 3) return 1;
    const bool grouped = !experts && xd == 3;
    const int64_t K = shapes[xi][xd - 1];
    const int64_t M = grouped ? shapes[xi][0] : shapes[xi][xd - 2];
    const int64_t tiles = xd == 3 ? shapes[xi][grouped ? 1 : 0] : 1;
    const int64_t rows = shapes[ci][cd - 2], E = experts ? shapes[ci][0] : 1;
    if (!experts && rows % tiles) return 1;
    const int64_t N = experts ? rows : rows / tiles;
    const int64_t Kc = shapes[ci][cd - 1];
    if (Kc != (kind == kFp4 ? K / 2 : K) || (kind == kFp4 && K % kFp4Block)) return 1;
    const int32_t* index = experts ? static_cast<const int32_t*>(params[1]) : nullptr;
    if (experts && std::strcmp(dtypes[1], "int32") != 0) return 1;
    const uint8_t* scale = static_cast<const uint8_t*>(params[si]);
    if (grouped && IsF64(dtypes[xi]))
        WeightProductGroups(kind, static_cast<const double*>(params[xi]), M, tiles, K, params[ci], scale, N,
                            static_cast<double*>(params[yi]));
    else if (grouped)
        WeightProductGroups(kind, static_cast<const float*>(params[xi]), M, tiles, K, params[ci], scale, N,
                            static_cast<float*>(params[yi]));
    if (grouped) return 0;
    if (IsF64(dtypes[xi]))
        return WeightProductAll(kind, static_cast<const double*>(params[xi]), tiles, M, K, index, E, params[ci], scale, N,
                                static_cast<double*>(params[yi]));
    return WeightProductAll(kind, static_cast<const float*>(params[xi]), tiles, M, K, index, E, params[ci], scale, N,
                            static_cast<float*>(params[yi]));
}

// Dequantise a weight as stored into the compute dtype (one kernel instead of the lookup chain;
// the same exact values as StoredWeight._dequant). params (attrs [2] = kind, K, in the compute
// dtype, which names the output's dtype):
//   all:     codes [L.., N, Kc], scale, attrs, out [L.., N, K]       (every matrix of a stack)
//   experts: codes [E, N, Kc], scale [E, ..], index int32 [T], attrs, out [T, N, K]
extern "C" __attribute__((visibility("default"))) int DequantAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                          void*, void*) {
    const bool experts = nparam == 5;
    if (nparam != 4 && !experts) return 1;
    const int ai = experts ? 3 : 2, oi = ai + 1;
    const bool f64 = IsF64(dtypes[oi]);
    if (std::strcmp(dtypes[ai], dtypes[oi]) != 0) return 1;
    const int kind = f64 ? int(static_cast<const double*>(params[ai])[0]) : int(static_cast<const float*>(params[ai])[0]);
    const int64_t K = f64 ? int64_t(static_cast<const double*>(params[ai])[1])
                          : int64_t(static_cast<const float*>(params[ai])[1]);
    const int cd = ndims[0];
    if (cd < 2) return 1;
    const int64_t N = shapes[0][cd - 2], Kc = shapes[0][cd - 1];
    if (Kc != (kind == kFp4 ? K / 2 : K) || (kind == kFp4 && K % kFp4Block)) return 1;
    const int64_t stack = Numel(cd - 2, shapes[0]);
    if (experts && std::strcmp(dtypes[2], "int32") != 0) return 1;
    const int32_t* index = experts ? static_cast<const int32_t*>(params[2]) : nullptr;
    const int64_t count = experts ? Numel(ndims[2], shapes[2]) : stack;
    const int64_t cb = CodeBytes(kind, N, K), sb = ScaleBytes(kind, N, K);
    const uint8_t* codes = static_cast<const uint8_t*>(params[0]);
    const uint8_t* scale = static_cast<const uint8_t*>(params[1]);
    for (int64_t t = 0; t < count; ++t) {
        const int64_t e = index ? index[t] : t;
        if (e < 0 || e >= stack) return 1;
        for (int64_t n = 0; n < N; ++n) {
            if (f64)
                DequantRowFast(kind, codes + e * cb, sb ? scale + e * sb : nullptr, n, N, K,
                           static_cast<double*>(params[oi]) + (t * N + n) * K);
            else
                DequantRowFast(kind, codes + e * cb, sb ? scale + e * sb : nullptr, n, N, K,
                           static_cast<float*>(params[oi]) + (t * N + n) * K);
        }
    }
    return 0;
}

// params: x [.., H, D] (or [.., D]: H = 1), cos [R, rd/2], sin [R, rd/2] with R * H * D = numel(x),
// attrs float64 [2] = rd, inverse; y like x
extern "C" __attribute__((visibility("default"))) int RopeAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                       void*, void*) {
    if (nparam != 5 || std::strcmp(dtypes[3], "float64") != 0) return 1;
    if (std::strcmp(dtypes[0], dtypes[1]) != 0 || std::strcmp(dtypes[0], dtypes[2]) != 0) return 1;
    const double* attrs = static_cast<const double*>(params[3]);
    const int64_t rd = int64_t(attrs[0]);
    const bool inverse = attrs[1] != 0;
    const int64_t D = shapes[0][ndims[0] - 1], half = rd / 2;
    const int64_t total = Numel(ndims[0], shapes[0]), angles = Numel(ndims[1], shapes[1]);
    if (rd <= 0 || rd % 2 || rd > D || angles % half || Numel(ndims[2], shapes[2]) != angles) return 1;
    const int64_t R = angles / half;
    if (R == 0 || total % (R * D)) return 1;
    const int64_t H = total / (R * D);
    if (IsF64(dtypes[0]))
        Rope(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]),
             static_cast<const double*>(params[2]), static_cast<double*>(params[4]), R, H, D, rd, inverse);
    else
        Rope(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
             static_cast<const float*>(params[2]), static_cast<float*>(params[4]), R, H, D, rd, inverse);
    return 0;
}

// params: x [.., d], weight [d] (a weight of another size: none), attrs float64 [1] = eps, y like x
extern "C" __attribute__((visibility("default"))) int RmsNormAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                          void*, void*) {
    if (nparam != 4 || std::strcmp(dtypes[2], "float64") != 0 || std::strcmp(dtypes[0], dtypes[1]) != 0) return 1;
    const double eps = static_cast<const double*>(params[2])[0];
    const int64_t d = shapes[0][ndims[0] - 1];
    const int64_t R = d ? Numel(ndims[0], shapes[0]) / d : 0;
    const bool weighted = Numel(ndims[1], shapes[1]) == d;
    if (IsF64(dtypes[0]))
        RmsNorm(static_cast<const double*>(params[0]), weighted ? static_cast<const double*>(params[1]) : nullptr,
                static_cast<double*>(params[3]), R, d, eps);
    else
        RmsNorm(static_cast<const float*>(params[0]), weighted ? static_cast<const float*>(params[1]) : nullptr,
                static_cast<float*>(params[3]), R, d, eps);
    return 0;
}

// params: X [T, n, d], fn [(2+n)n, n d], scale [3], base [(2+n)n], attrs float64 [4] (n, iters,
// hc_eps, norm_eps), u [T, d], pre [T, n], post [T, n], comb [T, n, n]
extern "C" __attribute__((visibility("default"))) int HcPreAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                        void*, void*) {
    if (nparam != 9 || std::strcmp(dtypes[4], "float64") != 0 || ndims[0] != 3) return 1;
    const double* attrs = static_cast<const double*>(params[4]);
    const int64_t n = int64_t(attrs[0]), T = shapes[0][0], d = shapes[0][2];
    if (shapes[0][1] != n || Numel(ndims[1], shapes[1]) != (2 + n) * n * n * d) return 1;
    for (int i = 1; i < 4; ++i) if (std::strcmp(dtypes[0], dtypes[i]) != 0) return 1;
    if (IsF64(dtypes[0]))
        HcPre(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]),
              static_cast<const double*>(params[2]), static_cast<const double*>(params[3]),
              static_cast<double*>(params[5]), static_cast<double*>(params[6]), static_cast<double*>(params[7]),
              static_cast<double*>(params[8]), T, d, attrs);
    else
        HcPre(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
              static_cast<const float*>(params[2]), static_cast<const float*>(params[3]),
              static_cast<float*>(params[5]), static_cast<float*>(params[6]), static_cast<float*>(params[7]),
              static_cast<float*>(params[8]), T, d, attrs);
    return 0;
}

// params: f [T, d], X [T, n, d], post [T, n], comb [T, n, n], Y [T, n, d]
extern "C" __attribute__((visibility("default"))) int HcPostAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                         void*, void*) {
    if (nparam != 5 || ndims[1] != 3) return 1;
    for (int i = 1; i < 4; ++i) if (std::strcmp(dtypes[0], dtypes[i]) != 0) return 1;
    const int64_t T = shapes[1][0], n = shapes[1][1], d = shapes[1][2];
    if (Numel(ndims[0], shapes[0]) != T * d || Numel(ndims[3], shapes[3]) != T * n * n) return 1;
    if (IsF64(dtypes[0]))
        HcPost(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]),
               static_cast<const double*>(params[2]), static_cast<const double*>(params[3]),
               static_cast<double*>(params[4]), T, n, d);
    else
        HcPost(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
               static_cast<const float*>(params[2]), static_cast<const float*>(params[3]),
               static_cast<float*>(params[4]), T, n, d);
    return 0;
}

template <class T>
int SinkAttentionSegments(void** params, int* ndims, int64_t** shapes, const char** dtypes, int segments) {
    const int64_t B = shapes[0][0], S = shapes[0][1], H = shapes[0][2], D = shapes[0][3];
    std::vector<KeySegment<T>> parts;
    for (int g = 0; g < segments; ++g) {
        const int k = 1 + 2 * g, mk = k + 1;
        if (ndims[k] != 3 || std::strcmp(dtypes[k], dtypes[0]) != 0 || std::strcmp(dtypes[mk], "bool") != 0) return 1;
        const int64_t n = shapes[k][1];
        if (shapes[k][0] != B || shapes[k][2] != D || Numel(ndims[mk], shapes[mk]) != B * S * n) return 1;
        parts.push_back({static_cast<const T*>(params[k]), static_cast<const uint8_t*>(params[mk]), n});
    }
    const int si = 1 + 2 * segments;
    if (std::strcmp(dtypes[si], dtypes[0]) != 0 || Numel(ndims[si], shapes[si]) != H) return 1;
    SinkAttention(static_cast<const T*>(params[0]), parts, static_cast<const T*>(params[si]),
                  static_cast<T*>(params[si + 2]), B, S, H, D, static_cast<const double*>(params[si + 1])[0]);
    return 0;
}

// params: q [B, S, H, D], then per key segment keys [B, N_g, D], mask bool [B, S, N_g] (1 to 3
// segments), sink [H], attrs float64 [1] = scale, out [B, S, H, D]
extern "C" __attribute__((visibility("default"))) int SinkAttentionAot(int nparam, void** params, int* ndims, int64_t** shapes,
                                const char** dtypes, void*, void*) {
    const int segments = (nparam - 4) / 2;
    if (nparam % 2 || segments < 1 || segments > 3 || ndims[0] != 4 || std::strcmp(dtypes[nparam - 2], "float64") != 0)
        return 1;
    if (IsF64(dtypes[0])) return SinkAttentionSegments<double>(params, ndims, shapes, dtypes, segments);
    return SinkAttentionSegments<float>(params, ndims, shapes, dtypes, segments);
}

// params: kv [B, C*D], gate [B, C*D], ape [M, C*D], kv_state [B, C*M, C*D], score_state (same),
// start int32 [B], count int32 [B], attrs float64 [1] = D; outputs pooled [B, D], kv_state, score_state
extern "C" __attribute__((visibility("default"))) int CompressorDecodeAot(int nparam, void** params, int* ndims,
                                   int64_t** shapes, const char** dtypes, void*, void*) {
    if (nparam != 11 || ndims[3] != 3 || ndims[2] != 2 || std::strcmp(dtypes[7], "float64") != 0) return 1;
    for (int i = 1; i < 5; ++i) if (std::strcmp(dtypes[0], dtypes[i]) != 0) return 1;
    if (std::strcmp(dtypes[5], "int32") != 0 || std::strcmp(dtypes[6], "int32") != 0) return 1;
    const int64_t B = shapes[3][0], rows = shapes[3][1], W = shapes[3][2], M = shapes[2][0];
    const int64_t D = int64_t(static_cast<const double*>(params[7])[0]), C = W / D;
    if ((C != 1 && C != 2) || C * D != W || C * M != rows || shapes[2][1] != W ||
        Numel(ndims[0], shapes[0]) != B * W || Numel(ndims[1], shapes[1]) != B * W ||
        Numel(ndims[5], shapes[5]) != B || Numel(ndims[6], shapes[6]) != B) return 1;
    const int32_t* start = static_cast<const int32_t*>(params[5]);
    const int32_t* count = static_cast<const int32_t*>(params[6]);
    if (IsF64(dtypes[0]))
        CompressorDecode(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]),
                         static_cast<const double*>(params[2]), static_cast<const double*>(params[3]),
                         static_cast<const double*>(params[4]), start, count, static_cast<double*>(params[8]),
                         static_cast<double*>(params[9]), static_cast<double*>(params[10]), B, M, C, D);
    else
        CompressorDecode(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
                         static_cast<const float*>(params[2]), static_cast<const float*>(params[3]),
                         static_cast<const float*>(params[4]), start, count, static_cast<float*>(params[8]),
                         static_cast<float*>(params[9]), static_cast<float*>(params[10]), B, M, C, D);
    return 0;
}

// params: logits [R, E], bias [E], index int32 [R, k] (hash experts; ignored for score routing),
// attrs float64 [4] = k, route_scale, score function (0 softmax, 1 sigmoid, 2 sqrtsoftplus), hash
// -> weights [R, k] (logits' dtype), experts int32 [R, k]
extern "C" __attribute__((visibility("default"))) int RouteAot(int nparam, void** params, int* ndims, int64_t** shapes,
                                                              const char** dtypes, void*, void*) {
    if (nparam != 6 || std::strcmp(dtypes[3], "float64") != 0 || std::strcmp(dtypes[2], "int32") != 0 ||
        std::strcmp(dtypes[5], "int32") != 0 || ndims[0] != 2)
        return 1;
    const double* attrs = static_cast<const double*>(params[3]);
    const int64_t R = shapes[0][0], E = shapes[0][1], k = int64_t(attrs[0]);
    const bool hash = attrs[3] != 0;
    if (k < 1 || k > E || (hash && Numel(ndims[2], shapes[2]) != R * k) || Numel(ndims[1], shapes[1]) != E) return 1;
    int32_t* index = static_cast<int32_t*>(params[5]);
    if (hash) std::memcpy(index, params[2], R * k * sizeof(int32_t));
    if (IsF64(dtypes[0]))
        return Route(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]), index,
                     static_cast<double*>(params[4]), R, E, k, int(attrs[2]), hash, attrs[1]);
    return Route(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]), index,
                 static_cast<float*>(params[4]), R, E, k, int(attrs[2]), hash, attrs[1]);
}

// params: gate [.., I], up [.., I], weight [rows] (or [1] with attrs[1] = 0: none), attrs float64
// [2] = limit, has weight -> h [.., I]
extern "C" __attribute__((visibility("default"))) int SwiGluAot(int nparam, void** params, int* ndims, int64_t** shapes,
                                                               const char** dtypes, void*, void*) {
    if (nparam != 5 || std::strcmp(dtypes[3], "float64") != 0) return 1;
    const double* attrs = static_cast<const double*>(params[3]);
    const int64_t I = shapes[0][ndims[0] - 1], R = Numel(ndims[0], shapes[0]) / I;
    const bool weighted = attrs[1] != 0;
    if (Numel(ndims[1], shapes[1]) != R * I || (weighted && Numel(ndims[2], shapes[2]) != R)) return 1;
    if (IsF64(dtypes[0]))
        SwiGlu(static_cast<const double*>(params[0]), static_cast<const double*>(params[1]),
               weighted ? static_cast<const double*>(params[2]) : nullptr, static_cast<double*>(params[4]), R, I,
               attrs[0]);
    else
        SwiGlu(static_cast<const float*>(params[0]), static_cast<const float*>(params[1]),
               weighted ? static_cast<const float*>(params[2]) : nullptr, static_cast<float*>(params[4]), R, I,
               attrs[0]);
    return 0;
}

// The indexer's top-k selection (ascend_v4/indexer.py selected_mask) of each row of n entries:
// with the invisible entries at -inf, the entries above the k-th largest value, then the
// lowest-index entries equal to it up to k in all; only visible entries are returned. Values
// are compared as they are (exact), so the choice is the composite's.
template <typename T>
void TopKMask(const T* scores, const bool* visible, bool* out, int64_t R, int64_t n, int64_t k) {
    std::vector<T> masked(n), order(n);
    const T neg_inf = -std::numeric_limits<T>::infinity();
    for (int64_t r = 0; r < R; ++r) {
        const T* s = scores + r * n;
        const bool* v = visible + r * n;
        for (int64_t i = 0; i < n; ++i) masked[i] = v[i] ? s[i] : neg_inf;
        order = masked;
        std::nth_element(order.begin(), order.begin() + (k - 1), order.end(), std::greater<T>());
        const T kth = order[k - 1];
        int64_t room = k;
        for (int64_t i = 0; i < n; ++i) room -= masked[i] > kth;
        int64_t ties = 0;
        for (int64_t i = 0; i < n; ++i) {
            const bool tie = masked[i] == kth && ++ties <= room;
            out[r * n + i] = v[i] && (masked[i] > kth || tie);
        }
    }
}

// params: scores [.., n], visible bool [.., n], attrs float64 [1] = k (1 <= k <= n) -> selected bool [.., n]
extern "C" __attribute__((visibility("default"))) int TopKMaskAot(int nparam, void** params, int* ndims, int64_t** shapes,
                                                                 const char** dtypes, void*, void*) {
    if (nparam != 4 || std::strcmp(dtypes[1], "bool") != 0 || std::strcmp(dtypes[2], "float64") != 0 ||
        std::strcmp(dtypes[3], "bool") != 0)
        return 1;
    const int64_t n = shapes[0][ndims[0] - 1], total = Numel(ndims[0], shapes[0]);
    const int64_t k = int64_t(static_cast<const double*>(params[2])[0]);
    if (n < 1 || k < 1 || k > n || Numel(ndims[1], shapes[1]) != total) return 1;
    const bool* visible = static_cast<const bool*>(params[1]);
    bool* out = static_cast<bool*>(params[3]);
    if (IsF64(dtypes[0]))
        TopKMask(static_cast<const double*>(params[0]), visible, out, total / n, n, k);
    else
        TopKMask(static_cast<const float*>(params[0]), visible, out, total / n, n, k);
    return 0;
}

// attention.window_geometry of one step (see there): start / count int32 [b], tokens [b, n] (only
// its shape), attrs float64 [1] = W -> pos int32 [b, n], ring_vis bool [b, n, W], chunk_vis bool
// [b, n, n], ring_src int32 [b*W], ring_hit bool [b, W, 1]. Integer arithmetic with floor modulo,
// as the primitives.
extern "C" __attribute__((visibility("default"))) int WindowGeometryAot(int nparam, void** params, int* ndims,
                                                                       int64_t** shapes, const char** dtypes, void*,
                                                                       void*) {
    if (nparam != 9 || std::strcmp(dtypes[0], "int32") != 0 || std::strcmp(dtypes[1], "int32") != 0 ||
        std::strcmp(dtypes[3], "float64") != 0 || ndims[2] != 2)
        return 1;
    const int64_t b = shapes[2][0], n = shapes[2][1];
    const int64_t W = int64_t(static_cast<const double*>(params[3])[0]);
    if (W < 1 || Numel(ndims[0], shapes[0]) != b || Numel(ndims[1], shapes[1]) != b) return 1;
    const int32_t* start = static_cast<const int32_t*>(params[0]);
    const int32_t* count = static_cast<const int32_t*>(params[1]);
    int32_t* pos = static_cast<int32_t*>(params[4]);
    bool* ring_vis = static_cast<bool*>(params[5]);
    bool* chunk_vis = static_cast<bool*>(params[6]);
    int32_t* ring_src = static_cast<int32_t*>(params[7]);
    bool* ring_hit = static_cast<bool*>(params[8]);
    auto floor_mod = [W](int64_t a) { return ((a % W) + W) % W; };
    for (int64_t r = 0; r < b; ++r) {
        const int64_t st = start[r], cnt = count[r];
        for (int64_t k = 0; k < n; ++k) {
            pos[r * n + k] = int32_t(st + k);
            for (int64_t j = 0; j < W; ++j) {
                const int64_t held = st - 1 - floor_mod(st - 1 - j);     // the position ring slot j holds
                ring_vis[(r * n + k) * W + j] = held >= 0 && held > st + k - W;
            }
            for (int64_t c = 0; c < n; ++c)                           // chunk token c seen by token k
                chunk_vis[(r * n + k) * n + c] = c <= k && c > k - W && c < cnt;
        }
        for (int64_t j = 0; j < W; ++j) {
            const int64_t last = cnt - 1 - floor_mod(st + cnt - 1 - j);
            ring_src[r * W + j] = int32_t(std::min(std::max(last, int64_t(0)), n - 1) + r * n);
            ring_hit[r * W + j] = last >= 0;
        }
    }
    return 0;
}

// Two weights of one format on the same activation (an owner's pair: wkv / wgate, wq_a / wkv,
// w1 / w3 of the shared or the routed experts): one call, each product exactly as
// WeightMatmulAot's plain or experts product. params (attrs float64 [1] = kind):
//   plain:   x [M, K], codes_a [Na, Kc], scale_a, codes_b [Nb, Kc], scale_b, attrs, y_a [M, Na], y_b [M, Nb]
//   experts: x [T, M, K], index int32 [T], codes_a [E, Na, Kc], scale_a, codes_b [E, Nb, Kc], scale_b,
//            attrs, y_a [T, M, Na], y_b [T, M, Nb]
extern "C" __attribute__((visibility("default"))) int WeightMatmulPairAot(int nparam, void** params, int* ndims,
                                                                         int64_t** shapes, const char** dtypes, void*,
                                                                         void*) {
    const bool experts = nparam == 9;
    if (nparam != 8 && !experts) return 1;
    const int ca = experts ? 2 : 1, sa = ca + 1, cb = ca + 2, sb = ca + 3, ai = ca + 4, ya = ca + 5, yb = ca + 6;
    const int xd = ndims[0], cd = ndims[ca];
    if (std::strcmp(dtypes[ai], "float64") != 0 || xd != (experts ? 3 : 2) || cd != (experts ? 3 : 2) ||
        ndims[cb] != cd || (experts && std::strcmp(dtypes[1], "int32") != 0))
        return 1;
    const int kind = int(static_cast<const double*>(params[ai])[0]);
    const int64_t K = shapes[0][xd - 1], M = shapes[0][xd - 2], tiles = experts ? shapes[0][0] : 1;
    const int64_t Kc = kind == kFp4 ? K / 2 : K, E = experts ? shapes[ca][0] : 1;
    if (shapes[ca][cd - 1] != Kc || shapes[cb][cd - 1] != Kc || (kind == kFp4 && K % kFp4Block) ||
        (experts && shapes[cb][0] != E))
        return 1;
    const int64_t Na = shapes[ca][cd - 2], Nb = shapes[cb][cd - 2];
    const int32_t* index = experts ? static_cast<const int32_t*>(params[1]) : nullptr;
    const uint8_t* scale_a = static_cast<const uint8_t*>(params[sa]);
    const uint8_t* scale_b = static_cast<const uint8_t*>(params[sb]);
    if (IsF64(dtypes[0])) {
        const double* x = static_cast<const double*>(params[0]);
        return WeightProductAll(kind, x, tiles, M, K, index, E, params[ca], scale_a, Na, static_cast<double*>(params[ya])) ||
               WeightProductAll(kind, x, tiles, M, K, index, E, params[cb], scale_b, Nb, static_cast<double*>(params[yb]));
    }
    const float* x = static_cast<const float*>(params[0]);
    return WeightProductAll(kind, x, tiles, M, K, index, E, params[ca], scale_a, Na, static_cast<float*>(params[ya])) ||
           WeightProductAll(kind, x, tiles, M, K, index, E, params[cb], scale_b, Nb, static_cast<float*>(params[yb]));
}
