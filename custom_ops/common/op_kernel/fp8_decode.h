// Vector-unit e4m3fn -> fp32 decode for SoCs without an fp8 vector Cast (Ascend 910B / 910C), built from
// 16-bit integer instructions the Atlas A2 / A3 vector unit has (And, Or, ShiftLeft, ShiftRight on
// int16 / uint16; Adds, Muls, Mins, Add on int16; Cast uint8 -> half -> int16 and int16 -> half).
// Bit-identical to a native conversion (950 vector Cast, ml_dtypes) for all 256 codes. Include after
// kernel_operator.h.
//
//   e4m3fn code  c = s eeee mmm  (bias 7, no infinities, s 1111 111 = NaN, max 448 = 0 1111 110)
//   fp16 result    s eeeee mmmmmmmmmm (bias 15)
//   normal   (e > 0):  s | (e + 8) << 10 | m << 7      = s << 15 | ((c & 0x7f) << 7) + 0x2000
//   subnormal (e = 0): m * 2^-9 (an fp16 normal): the 3-bit m is normalised by the exact int16 -> half
//                      Cast, then scaled by 2^-9 (exact; no fp16 subnormal is ever formed); m = 0 -> +-0
//   NaN  (c & 0x7f == 0x7f): the fp16 quiet NaN 0x7e00 with the code's sign (fp32 0x7fc00000 / 0xffc00000)
// The fp16 value is exact (e4m3 fits fp16: 3 <= 10 mantissa bits, 2^-9 .. 448 within fp16 normals), so
// the half -> float Cast that follows is exact as well; lanes select normal / subnormal through masks.
#ifndef ASCEND_V4_FP8_DECODE_H
#define ASCEND_V4_FP8_DECODE_H

namespace v4k {
using namespace AscendC;

// UB scratch of DecodeE4M3: n lanes each (n a multiple of 16); k7f / k07 hold constants 0x7f / 0x07.
struct E4M3Scratch {
    LocalTensor<half> h;
    LocalTensor<int16_t> c, e, b, s, k7f, k07;
};
constexpr uint32_t kE4M3ScratchTensors = 7;   // buffers of n * 2 bytes the scratch needs

// The scratch carved from one buffer of kE4M3ScratchTensors * n int16 lanes; writes its constants (vector unit).
__aicore__ inline E4M3Scratch E4M3ScratchIn(const LocalTensor<int16_t>& buf, uint32_t n) {
    E4M3Scratch t;
    t.h = buf.ReinterpretCast<half>();
    t.c = buf[n]; t.e = buf[2 * n]; t.b = buf[3 * n]; t.s = buf[4 * n]; t.k7f = buf[5 * n]; t.k07 = buf[6 * n];
    Duplicate(t.k7f, static_cast<int16_t>(0x7f), n);
    Duplicate(t.k07, static_cast<int16_t>(0x07), n);
    return t;
}

// dst[0:n] = e4m3fn codes[0:n] as fp32, on the vector unit without fp8 arithmetic.
__aicore__ inline void DecodeE4M3(const LocalTensor<float>& dst, const LocalTensor<uint8_t>& codes, const E4M3Scratch& t,
                                  uint32_t n) {
    auto u = [](const LocalTensor<int16_t>& x) { return x.ReinterpretCast<uint16_t>(); };   // logical shifts, bit ops
    Cast(t.h, codes, RoundMode::CAST_NONE, n);               // byte 0..255 -> half (exact)
    Cast(t.c, t.h, RoundMode::CAST_RINT, n);                 // c: the code in a 16-bit lane
    And(t.e, t.c, t.k7f, n);                                 // e: eeeemmm (c & 0x7f)
    ShiftRight(u(t.c), u(t.c), uint16_t(7), n);
    ShiftLeft(u(t.c), u(t.c), uint16_t(15), n);              // c: sign at bit 15
    And(t.s, t.e, t.k07, n);                                 // s: mmm
    Cast(t.h, t.s, RoundMode::CAST_NONE, n);                 // m as half (normalised, exact)
    Muls(t.h, t.h, static_cast<half>(1.0f / 512.0f), n);    // h: subnormal value m * 2^-9 (fp16 normal or 0)
    ShiftRight(u(t.s), u(t.e), uint16_t(3), n);              // s: eeee
    Mins(t.s, t.s, static_cast<int16_t>(1), n);              // s: 1 for a normal code, 0 for a subnormal one
    ShiftLeft(u(t.b), u(t.e), uint16_t(7), n);
    Adds(t.b, t.b, static_cast<int16_t>(0x2000), n);         // b: 0 eeeee mmm0000000, exponent rebiased +8
    Adds(t.e, t.e, static_cast<int16_t>(1), n);
    ShiftRight(u(t.e), u(t.e), uint16_t(7), n);              // e: 1 iff eeeemmm == 1111111 (NaN)
    Muls(t.e, t.e, static_cast<int16_t>(0x7e00 - 0x5f80), n);
    Add(t.b, t.b, t.e, n);                                   // NaN: 0x5f80 (what the normal rule gives) -> 0x7e00
    Adds(t.e, t.s, static_cast<int16_t>(-1), n);             // e: 0xffff on subnormal lanes, else 0
    Muls(t.s, t.s, static_cast<int16_t>(-1), n);             // s: 0xffff on normal lanes, else 0
    And(u(t.b), u(t.b), u(t.s), n);
    And(u(t.e), t.h.ReinterpretCast<uint16_t>(), u(t.e), n);
    Or(u(t.b), u(t.b), u(t.e), n);
    Or(u(t.b), u(t.b), u(t.c), n);                           // b: the fp16 bits
    Cast(dst, t.b.ReinterpretCast<half>(), RoundMode::CAST_NONE, n);
}

}  // namespace v4k
#endif
