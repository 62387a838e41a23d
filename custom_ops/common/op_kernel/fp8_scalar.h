// Scalar-unit helpers shared by the kernels that encode FP8 (moe_dispatch, kv_pack_fp8):
// float bit access, exact ceil(log2), fp32 -> e4m3fn encoding (910B/910C have no fp8 vector Cast),
// and a one-event pipe-to-pipe sync. Include after kernel_operator.h.
#ifndef ASCEND_V4_FP8_SCALAR_H
#define ASCEND_V4_FP8_SCALAR_H

namespace v4k {
using namespace AscendC;

__aicore__ inline uint32_t Bits(float f) { union { float f; uint32_t u; } x; x.f = f; return x.u; }
__aicore__ inline float FromBits(uint32_t u) { union { float f; uint32_t u; } x; x.u = u; return x.f; }
// exact ceil(log2(x)) of a positive normal float
__aicore__ inline int32_t CeilLog2(float x) {
    uint32_t b = Bits(x);
    int32_t e = static_cast<int32_t>((b >> 23) & 0xff) - 127;
    return (b & 0x7fffff) ? e + 1 : e;
}
// fp32 -> e4m3fn code on the scalar unit: round to nearest even, saturate to +-448 (SoCs without fp8 Cast)
__aicore__ inline uint8_t EncodeE4M3(float f) {
    uint32_t b = Bits(f);
    uint8_t sign = static_cast<uint8_t>((b >> 24) & 0x80);
    uint32_t a = b & 0x7fffffff;
    if (a > 0x7f800000) return sign | 0x7f;                       // NaN
    if (a >= 0x43e00000) return sign | 0x7e;                      // >= 448
    int32_t e = static_cast<int32_t>(a >> 23) - 127;
    if (e < -6) {                                                  // e4m3 subnormal: multiples of 2^-9
        float q = FromBits(a) * 512.0f + 8388608.0f;               // RNE to an integer via the 2^23 trick
        return sign | static_cast<uint8_t>(Bits(q) & 0xff);
    }
    uint32_t mant = a & 0x7fffff, r = mant >> 20, rem = mant & 0xfffff;
    if (rem > 0x80000 || (rem == 0x80000 && (r & 1))) ++r;
    if (r == 8) { r = 0; ++e; }
    uint32_t code = (static_cast<uint32_t>(e + 7) << 3) | r;
    return sign | static_cast<uint8_t>(code > 0x7e ? 0x7e : code);
}
// order all later work of the second pipe after all earlier work of the first
template <HardEvent E>
__aicore__ inline void Sync() {
    SetFlag<E>(EVENT_ID0);
    WaitFlag<E>(EVENT_ID0);
}
}  // namespace v4k

#endif  // ASCEND_V4_FP8_SCALAR_H
