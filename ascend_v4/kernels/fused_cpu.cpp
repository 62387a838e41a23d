// Fused CPU kernels of the model's two longest elementwise chains, for MindSpore's
// ops.Custom(func_type="aot"): one kernel instead of ~40 (block quant-dequant) or ~130 (Sinkhorn)
// per call. float32 and float64, each computed in its own precision with exactly the operation
// order of the composite graph (ascend_v4/numerics.py quant_dequant, ascend_v4/mhc.py
// sinkhorn_split), so results are bit-identical to it where the composite is exact (all of the
// quantisation; Sinkhorn up to the libm exp/sigmoid).
//
// aot signature: int Fn(int nparam, void** params, int* ndims, int64_t** shapes,
//                       const char** dtypes, void* stream, void* extra); returns 0 or 1.
#include <cmath>
#include <cstdint>
#include <cstring>

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

int64_t Numel(int nd, const int64_t* shape) {
    int64_t k = 1;
    for (int d = 0; d < nd; ++d) k *= shape[d];
    return k;
}

bool IsF64(const char* dt) { return std::strcmp(dt, "float64") == 0; }

}  // namespace

// params: x [..., K], attrs float64 [5], y [..., K]; block = attrs[0] divides K
extern "C" __attribute__((visibility("default"))) int QuantDequantAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void*, void*) {
    if (nparam != 3 || std::strcmp(dtypes[1], "float64") != 0) return 1;
    const double* attrs = static_cast<const double*>(params[1]);
    const int64_t block = int64_t(attrs[0]);
    const int64_t total = Numel(ndims[0], shapes[0]);
    if (block <= 0 || shapes[0][ndims[0] - 1] % block) return 1;
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
