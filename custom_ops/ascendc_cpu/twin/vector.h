// Vector-unit instructions (count form).  Operands live in UB and start on 32-byte boundaries.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include "tensor.h"

namespace AscendC {

enum class RoundMode : uint8_t { CAST_NONE, CAST_RINT, CAST_FLOOR, CAST_CEIL, CAST_ROUND, CAST_TRUNC, CAST_ODD };

namespace detail {
// The VectorDtype bit of an element type (0: a type the twin does not check).
template <class T>
constexpr uint32_t VecDtypeBit() {
    using namespace ascendc_twin;
    return std::is_same<T, float>::value ? kFp32 : std::is_same<T, half>::value ? kFp16
         : std::is_same<T, bfloat16_t>::value ? kBf16 : std::is_same<T, fp8_e4m3fn_t>::value ? kFp8E4m3
         : std::is_same<T, int8_t>::value ? kInt8 : std::is_same<T, uint8_t>::value ? kUint8
         : std::is_same<T, int16_t>::value ? kInt16 : std::is_same<T, uint16_t>::value ? kUint16
         : std::is_same<T, int32_t>::value ? kInt32 : std::is_same<T, uint32_t>::value ? kUint32
         : std::is_same<T, int64_t>::value ? kInt64 : 0u;
}
// SOC_DTYPE: the selected SoC's vector unit must support T (soc_profiles: vector_dtypes).
template <class T>
inline void VecDtype(const char* op, const char* role) {
    const ascendc_twin::SocSpec& soc = ascendc_twin::Ctx()->soc;
    if ((soc.vectorDtypes & VecDtypeBit<T>()) != VecDtypeBit<T>())
        ascendc_twin::Violate("SOC_DTYPE", std::string(op) + ": " + role + " is " + ascendc_twin::TypeName<T>() +
                                               ", which the vector unit of " + soc.name + " does not support");
}
template <class T>
inline void VecOperand(const LocalTensor<T>& t, uint64_t count, const char* op, const char* role) {
    VecDtype<T>(op, role);
    if (!t.Valid()) ascendc_twin::Violate("UB_BOUNDS", std::string(op) + ": " + role + " is an unallocated LocalTensor");
    uint64_t off = ascendc_twin::UbOffset(t.GetPhyAddr());
    if (off % 32 != 0)
        ascendc_twin::Violate("VEC_ALIGN_32B", std::string(op) + ": " + role + " starts at Unified Buffer byte " + std::to_string(off) + ", not 32-byte aligned");
    if (count > t.GetSize())
        ascendc_twin::Violate("UB_BOUNDS", std::string(op) + ": " + role + " has " + std::to_string(t.GetSize()) + " elements, count is " + std::to_string(count));
    bool write = role[0] == 'd' || role[0] == 'w';  // "dst", "workLocal"
    ascendc_twin::UbAccess(ascendc_twin::kV, t.GetPhyAddr(), count * sizeof(T), write, op);
}
template <class T>
constexpr bool kFloat = std::is_same<T, float>::value || std::is_same<T, half>::value;
template <class T>
constexpr bool kArith = kFloat<T> || std::is_same<T, int32_t>::value || std::is_same<T, int16_t>::value;
}  // namespace detail

#define ASCENDC_TWIN_BINARY(NAME, EXPR, OK)                                                            \
    template <class T>                                                                               \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b,    \
                     const int32_t count) {                                                           \
        static_assert(OK, #NAME ": unsupported data type on the vector unit");                       \
        detail::VecOperand(dst, count, #NAME, "dst");                                                \
        detail::VecOperand(a, count, #NAME, "src0");                                                 \
        detail::VecOperand(b, count, #NAME, "src1");                                                 \
        T *d = dst.GetPhyAddr(), *x = a.GetPhyAddr(), *y = b.GetPhyAddr();                           \
        for (int32_t i = 0; i < count; ++i) d[i] = (EXPR);                                           \
    }
ASCENDC_TWIN_BINARY(Add, x[i] + y[i], detail::kArith<T>)
ASCENDC_TWIN_BINARY(Sub, x[i] - y[i], detail::kArith<T>)
ASCENDC_TWIN_BINARY(Mul, x[i] * y[i], detail::kArith<T>)
ASCENDC_TWIN_BINARY(Div, x[i] / y[i], detail::kFloat<T>)
ASCENDC_TWIN_BINARY(Max, x[i] > y[i] ? x[i] : y[i], detail::kArith<T>)
ASCENDC_TWIN_BINARY(Min, x[i] < y[i] ? x[i] : y[i], detail::kArith<T>)
#undef ASCENDC_TWIN_BINARY

#define ASCENDC_TWIN_SCALAR(NAME, EXPR, OK)                                                            \
    template <class T>                                                                               \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const T s, const int32_t count) { \
        static_assert(OK, #NAME ": unsupported data type on the vector unit");                       \
        detail::VecOperand(dst, count, #NAME, "dst");                                                \
        detail::VecOperand(a, count, #NAME, "src");                                                  \
        T *d = dst.GetPhyAddr(), *x = a.GetPhyAddr();                                                \
        for (int32_t i = 0; i < count; ++i) d[i] = (EXPR);                                           \
    }
ASCENDC_TWIN_SCALAR(Adds, x[i] + s, detail::kArith<T>)
ASCENDC_TWIN_SCALAR(Muls, x[i] * s, detail::kArith<T>)
ASCENDC_TWIN_SCALAR(Maxs, x[i] > s ? x[i] : s, detail::kArith<T>)
ASCENDC_TWIN_SCALAR(Mins, x[i] < s ? x[i] : s, detail::kArith<T>)
#undef ASCENDC_TWIN_SCALAR

#define ASCENDC_TWIN_UNARY(NAME, EXPR, OK)                                                             \
    template <class T>                                                                               \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const int32_t count) {      \
        static_assert(OK, #NAME ": unsupported data type on the vector unit");                       \
        detail::VecOperand(dst, count, #NAME, "dst");                                                \
        detail::VecOperand(a, count, #NAME, "src");                                                  \
        T *d = dst.GetPhyAddr(), *x = a.GetPhyAddr();                                                \
        for (int32_t i = 0; i < count; ++i) d[i] = (EXPR);                                           \
    }
ASCENDC_TWIN_UNARY(Exp, static_cast<T>(std::exp(static_cast<float>(x[i]))), detail::kFloat<T>)
ASCENDC_TWIN_UNARY(Ln, static_cast<T>(std::log(static_cast<float>(x[i]))), detail::kFloat<T>)
ASCENDC_TWIN_UNARY(Sqrt, static_cast<T>(std::sqrt(static_cast<float>(x[i]))), detail::kFloat<T>)
ASCENDC_TWIN_UNARY(Reciprocal, static_cast<T>(1.0f / static_cast<float>(x[i])), detail::kFloat<T>)
ASCENDC_TWIN_UNARY(Abs, x[i] < T(0) ? static_cast<T>(-x[i]) : x[i], detail::kArith<T>)
#undef ASCENDC_TWIN_UNARY

// Bitwise and shift instructions (integer lanes).  Public API facts (CANN Ascend C API):
// And / Or (atlasascendc_api_07_0041 / _0042): count form, int16_t / uint16_t on Atlas A2 / A3.
// ShiftLeft / ShiftRight (atlasascendc_api_07_0058 / _0059): scalar shift, uint16_t / int16_t / uint32_t /
// int32_t on Atlas A2 / A3; the shift lies in [0, 16] for 16-bit and [0, 32] for 32-bit lanes.  Unsigned
// lanes shift logically; signed lanes arithmetically: ShiftRight copies the sign bit in, ShiftLeft keeps
// the sign bit and drops the bit below it (int16 1010101010101010 << 1 = 1101010101010100).
namespace detail {
template <class T>
constexpr bool kBit16 = std::is_same<T, int16_t>::value || std::is_same<T, uint16_t>::value;
template <class T>
constexpr bool kShiftable = kBit16<T> || std::is_same<T, int32_t>::value || std::is_same<T, uint32_t>::value;
template <class T>
inline void ShiftAmount(const char* op, T s) {
    constexpr long long bits = 8 * sizeof(T);
    if (static_cast<long long>(s) < 0 || static_cast<long long>(s) > bits)
        ascendc_twin::Violate("SHIFT_AMOUNT", std::string(op) + ": shift " + std::to_string(static_cast<long long>(s)) +
                                                  " is outside 0.." + std::to_string(bits) + " for " + ascendc_twin::TypeName<T>());
}
template <class T>
inline T ShiftLeftLane(T x, T s) {
    using U = typename std::make_unsigned<T>::type;
    constexpr unsigned bits = 8 * sizeof(T);
    U u = static_cast<U>(x), sh = static_cast<U>(static_cast<unsigned>(s) >= bits ? 0 : static_cast<U>(u << s));
    if (std::is_signed<T>::value) {                   // arithmetic: the sign bit stays, the bit below it drops
        U sign = static_cast<U>(U(1) << (bits - 1));
        sh = static_cast<U>((u & sign) | (sh & static_cast<U>(~sign)));
    }
    return static_cast<T>(sh);
}
template <class T>
inline T ShiftRightLane(T x, T s) {
    constexpr unsigned bits = 8 * sizeof(T);
    if (static_cast<unsigned>(s) >= bits) return std::is_signed<T>::value && x < 0 ? T(-1) : T(0);
    return static_cast<T>(x >> s);                    // signed: arithmetic (C++20 / GCC), unsigned: logical
}
}  // namespace detail

#define ASCENDC_TWIN_BITWISE(NAME, EXPR)                                                               \
    template <class T>                                                                               \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const LocalTensor<T>& b,    \
                     const int32_t count) {                                                           \
        static_assert(detail::kBit16<T>, #NAME ": int16_t / uint16_t only on the Atlas A2 / A3 vector unit"); \
        detail::VecOperand(dst, count, #NAME, "dst");                                                \
        detail::VecOperand(a, count, #NAME, "src0");                                                 \
        detail::VecOperand(b, count, #NAME, "src1");                                                 \
        T *d = dst.GetPhyAddr(), *x = a.GetPhyAddr(), *y = b.GetPhyAddr();                           \
        for (int32_t i = 0; i < count; ++i) d[i] = static_cast<T>(EXPR);                             \
    }
ASCENDC_TWIN_BITWISE(And, x[i] & y[i])
ASCENDC_TWIN_BITWISE(Or, x[i] | y[i])
#undef ASCENDC_TWIN_BITWISE

#define ASCENDC_TWIN_SHIFT(NAME, LANE)                                                                 \
    template <class T>                                                                               \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& a, const T s, const int32_t count) { \
        static_assert(detail::kShiftable<T>, #NAME ": uint16_t / int16_t / uint32_t / int32_t only");  \
        detail::VecOperand(dst, count, #NAME, "dst");                                                \
        detail::VecOperand(a, count, #NAME, "src");                                                  \
        detail::ShiftAmount(#NAME, s);                                                               \
        T *d = dst.GetPhyAddr(), *x = a.GetPhyAddr();                                                \
        for (int32_t i = 0; i < count; ++i) d[i] = detail::LANE(x[i], s);                            \
    }
ASCENDC_TWIN_SHIFT(ShiftLeft, ShiftLeftLane)
ASCENDC_TWIN_SHIFT(ShiftRight, ShiftRightLane)
#undef ASCENDC_TWIN_SHIFT

// dst = dst + src * scalar
template <class T, class U>
inline void Axpy(const LocalTensor<T>& dst, const LocalTensor<U>& src, const U s, const int32_t count) {
    static_assert(detail::kFloat<T> && detail::kFloat<U>, "Axpy: float/half only");
    detail::VecOperand(dst, count, "Axpy", "dst");
    detail::VecOperand(src, count, "Axpy", "src");
    T* d = dst.GetPhyAddr();
    U* x = src.GetPhyAddr();
    for (int32_t i = 0; i < count; ++i) d[i] = static_cast<T>(d[i] + static_cast<T>(x[i] * s));
}

template <class T>
inline void Duplicate(const LocalTensor<T>& dst, const T v, const int32_t count) {
    detail::VecOperand(dst, count, "Duplicate", "dst");
    T* d = dst.GetPhyAddr();
    for (int32_t i = 0; i < count; ++i) d[i] = v;
}

// dst[0] = sum(src[0:count]); accumulated per 256-byte repeat, then across repeats (binary tree).
template <class T>
inline void ReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work, const int32_t count) {
    static_assert(detail::kFloat<T>, "ReduceSum: float/half only");
    detail::VecOperand(dst, 1, "ReduceSum", "dst");
    detail::VecOperand(src, count, "ReduceSum", "src");
    const int32_t per = 256 / sizeof(T), reps = (count + per - 1) / per;
    detail::VecOperand(work, reps, "ReduceSum", "workLocal");
    T* w = work.GetPhyAddr();
    const T* x = src.GetPhyAddr();
    for (int32_t r = 0; r < reps; ++r) {  // within a repeat: 8 lanes, then a binary tree over the lanes
        float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        const int32_t lo = r * per, hi = std::min(count, (r + 1) * per);
        int32_t i = lo;
        for (; i + 8 <= hi; i += 8)
            for (int32_t j = 0; j < 8; ++j) lane[j] += static_cast<float>(x[i + j]);
        for (int32_t j = 0; i < hi; ++i, ++j) lane[j] += static_cast<float>(x[i]);
        w[r] = static_cast<T>(((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])));
    }
    for (int32_t n = reps; n > 1;) {
        int32_t h = n / 2;
        for (int32_t i = 0; i < h; ++i) w[i] = static_cast<T>(w[2 * i] + w[2 * i + 1]);
        if (n % 2) w[h] = w[n - 1];
        n = h + n % 2;
    }
    dst.GetPhyAddr()[0] = reps > 0 ? w[0] : T(0);
}

// dst[0] = max(src[0:count]); with calIndex, dst[1] holds the index (uint32 bits).
template <class T>
inline void ReduceMax(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work, const int32_t count, bool calIndex = false) {
    static_assert(detail::kFloat<T>, "ReduceMax: float/half only");
    detail::VecOperand(dst, calIndex ? 2 : 1, "ReduceMax", "dst");
    detail::VecOperand(src, count, "ReduceMax", "src");
    detail::VecOperand(work, 1, "ReduceMax", "workLocal");
    if (count <= 0) ascendc_twin::Violate("VEC_COUNT", "ReduceMax with count 0");
    const T* x = src.GetPhyAddr();
    uint32_t best = 0;
    for (int32_t i = 1; i < count; ++i) if (x[i] > x[best]) best = i;
    dst.GetPhyAddr()[0] = x[best];
    if (calIndex) std::memcpy(dst.GetPhyAddr() + 1, &best, sizeof(uint32_t) < sizeof(T) ? sizeof(uint32_t) : sizeof(T));
}

// dst[i] = element at byte address srcBaseAddr + offset[i] of src.
template <class T>
inline void Gather(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<uint32_t>& offset, const uint32_t srcBaseAddr, const uint32_t count) {
    detail::VecOperand(dst, count, "Gather", "dst");
    detail::VecOperand(src, 1, "Gather", "src");
    ascendc_twin::UbAccess(ascendc_twin::kV, src.GetPhyAddr(), uint64_t(src.GetSize()) * sizeof(T), false, "Gather");
    detail::VecOperand(offset, count, "Gather", "srcOffset");
    const uint8_t* base = reinterpret_cast<const uint8_t*>(src.GetPhyAddr());
    const uint32_t* off = offset.GetPhyAddr();
    uint64_t limit = uint64_t(src.GetSize()) * sizeof(T);
    T* d = dst.GetPhyAddr();
    for (uint32_t i = 0; i < count; ++i) {
        uint64_t a = uint64_t(srcBaseAddr) + off[i];
        if (a % sizeof(T) != 0) ascendc_twin::Violate("GATHER_OFFSET", "Gather offset " + std::to_string(a) + " is not a multiple of the element size");
        if (a + sizeof(T) > limit) ascendc_twin::Violate("UB_BOUNDS", "Gather offset " + std::to_string(a) + " past the source tensor's " + std::to_string(limit) + " bytes");
        std::memcpy(d + i, base + a, sizeof(T));
    }
}

namespace detail {
template <class D, class S> struct CastPair : std::false_type {};
#define ASCENDC_TWIN_CAST(D, S) template <> struct CastPair<D, S> : std::true_type {};
ASCENDC_TWIN_CAST(float, half) ASCENDC_TWIN_CAST(half, float)
ASCENDC_TWIN_CAST(float, bfloat16_t) ASCENDC_TWIN_CAST(bfloat16_t, float)
ASCENDC_TWIN_CAST(float, int32_t) ASCENDC_TWIN_CAST(int32_t, float)
ASCENDC_TWIN_CAST(half, int32_t) ASCENDC_TWIN_CAST(int32_t, half)
ASCENDC_TWIN_CAST(half, uint8_t) ASCENDC_TWIN_CAST(uint8_t, half)
ASCENDC_TWIN_CAST(half, int8_t) ASCENDC_TWIN_CAST(int8_t, half)
ASCENDC_TWIN_CAST(half, int16_t) ASCENDC_TWIN_CAST(int16_t, half)
ASCENDC_TWIN_CAST(float, fp8_e4m3fn_t) ASCENDC_TWIN_CAST(fp8_e4m3fn_t, float)
ASCENDC_TWIN_CAST(half, fp8_e4m3fn_t) ASCENDC_TWIN_CAST(fp8_e4m3fn_t, half)
ASCENDC_TWIN_CAST(bfloat16_t, fp8_e4m3fn_t) ASCENDC_TWIN_CAST(fp8_e4m3fn_t, bfloat16_t)
#undef ASCENDC_TWIN_CAST

inline float RoundTo(float v, RoundMode m) {
    switch (m) {
        case RoundMode::CAST_FLOOR: return std::floor(v);
        case RoundMode::CAST_CEIL: return std::ceil(v);
        case RoundMode::CAST_ROUND: return std::round(v);
        case RoundMode::CAST_TRUNC: return std::trunc(v);
        default: return std::nearbyint(v);  // CAST_NONE (when lossy) and CAST_RINT: nearest even
    }
}
template <class D>
inline D Convert(float v, RoundMode m) {
    if constexpr (std::is_integral<D>::value) {
        float r = RoundTo(v, m);
        float lo = static_cast<float>(std::numeric_limits<D>::min()), hi = static_cast<float>(std::numeric_limits<D>::max());
        return static_cast<D>(std::isnan(r) ? 0.0f : std::min(std::max(r, lo), hi));
    } else {
        return D(v);  // float narrowing rounds to nearest even; fp8 saturates
    }
}
}  // namespace detail

template <class D, class S>
inline void Cast(const LocalTensor<D>& dst, const LocalTensor<S>& src, const RoundMode mode, const uint32_t count) {
    static_assert(detail::CastPair<D, S>::value, "Cast: this (dst, src) type pair has no vector instruction");
    detail::VecDtype<S>("Cast", "src");
    detail::VecDtype<D>("Cast", "dst");
    detail::VecOperand(dst, count, "Cast", "dst");
    detail::VecOperand(src, count, "Cast", "src");
    D* d = dst.GetPhyAddr();
    const S* s = src.GetPhyAddr();
    for (uint32_t i = 0; i < count; ++i) d[i] = detail::Convert<D>(static_cast<float>(s[i]), mode);
}

}  // namespace AscendC
