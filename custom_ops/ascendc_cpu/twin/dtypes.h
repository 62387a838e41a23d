// Scalar types of the AscendC API: half, bfloat16_t, fp8_e4m3fn_t (bit-exact conversions).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

using half = _Float16;  // IEEE binary16, round-to-nearest-even conversions (GCC >= 12)

struct bfloat16_t {
    uint16_t bits = 0;
    bfloat16_t() = default;
    explicit bfloat16_t(float f) {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) { bits = static_cast<uint16_t>((u >> 16) | 0x40); return; }
        u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
        bits = static_cast<uint16_t>(u >> 16);
    }
    operator float() const {
        uint32_t u = static_cast<uint32_t>(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
};

namespace ascendc_twin {
// e4m3fn: bias 7, no infinities, 0x7f/0xff = NaN, max finite 448.  Saturating, round-to-nearest-even.
inline uint8_t EncodeE4M3(float f) {
    uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
    if (std::isnan(f)) return sign | 0x7f;
    float a = std::fabs(f);
    if (a >= 448.0f) return sign | 0x7e;
    if (a < 0.015625f) {  // below 2^-6: subnormal grid of 2^-9 (8 -> 0x08 is the smallest normal)
        return sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f));
    }
    int e;
    std::frexp(a, &e);                 // a = m 2^e, m in [0.5, 1)
    int E = e - 1;                     // a in [2^E, 2^(E+1))
    float q = std::nearbyint(std::ldexp(a, 3 - E));  // [8, 16]
    if (q >= 16.0f) { q = 8.0f; E += 1; }
    int code = ((E + 7) << 3) | (static_cast<int>(q) - 8);
    if (code > 0x7e) code = 0x7e;
    return sign | static_cast<uint8_t>(code);
}

inline float DecodeE4M3(uint8_t b) {
    int e = (b >> 3) & 0xf, m = b & 7;
    float v;
    if (e == 15 && m == 7) v = NAN;
    else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);
    else v = std::ldexp(1.0f + m / 8.0f, e - 7);
    return (b & 0x80) ? -v : v;
}
}  // namespace ascendc_twin

struct fp8_e4m3fn_t {
    uint8_t bits = 0;
    fp8_e4m3fn_t() = default;
    explicit fp8_e4m3fn_t(float f) : bits(ascendc_twin::EncodeE4M3(f)) {}
    operator float() const { return ascendc_twin::DecodeE4M3(bits); }
};

namespace ascendc_twin {
template <class T> inline const char* TypeName();
template <> inline const char* TypeName<float>() { return "float"; }
template <> inline const char* TypeName<half>() { return "half"; }
template <> inline const char* TypeName<bfloat16_t>() { return "bfloat16_t"; }
template <> inline const char* TypeName<fp8_e4m3fn_t>() { return "fp8_e4m3fn_t"; }
template <> inline const char* TypeName<int32_t>() { return "int32_t"; }
template <> inline const char* TypeName<uint32_t>() { return "uint32_t"; }
template <> inline const char* TypeName<int16_t>() { return "int16_t"; }
template <> inline const char* TypeName<uint16_t>() { return "uint16_t"; }
template <> inline const char* TypeName<uint8_t>() { return "uint8_t"; }
template <> inline const char* TypeName<int8_t>() { return "int8_t"; }
template <> inline const char* TypeName<int64_t>() { return "int64_t"; }
}  // namespace ascendc_twin
