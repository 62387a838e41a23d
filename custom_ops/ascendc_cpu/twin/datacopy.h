// DataCopy / DataCopyPad between GM and the Unified Buffer, with the 32-byte rules.
#pragma once
#include <cstring>
#include <string>
#include "tensor.h"

namespace AscendC {

struct DataCopyParams {     // units: 32-byte blocks (GM and UB alike)
    uint16_t blockCount = 1;
    uint16_t blockLen = 0;
    uint16_t srcStride = 0;
    uint16_t dstStride = 0;
    DataCopyParams() = default;
    DataCopyParams(uint16_t c, uint16_t l, uint16_t s, uint16_t d) : blockCount(c), blockLen(l), srcStride(s), dstStride(d) {}
};

struct DataCopyExtParams {  // blockLen in bytes; GM-side stride in bytes, UB-side stride in 32-byte blocks
    uint16_t blockCount = 1;
    uint32_t blockLen = 0;
    uint32_t srcStride = 0;
    uint32_t dstStride = 0;
    uint32_t rsv = 0;
    DataCopyExtParams() = default;
    DataCopyExtParams(uint16_t c, uint32_t l, uint32_t s, uint32_t d, uint32_t r) : blockCount(c), blockLen(l), srcStride(s), dstStride(d), rsv(r) {}
};

template <class T>
struct DataCopyPadExtParams {
    bool isPad = false;
    uint8_t leftPadding = 0;
    uint8_t rightPadding = 0;
    T paddingValue = T();
};

namespace detail {
constexpr uint8_t kPoison = 0xff;  // UB bytes with undefined content read back as 0xff (NaN for floats)

template <class T>
inline void UbAligned(const LocalTensor<T>& t, const char* op) {
    if (!t.Valid()) ascendc_twin::Violate("UB_BOUNDS", std::string(op) + " on an unallocated LocalTensor");
    uint64_t off = ascendc_twin::UbOffset(t.GetPhyAddr());
    if (off % 32 != 0)
        ascendc_twin::Violate("DATACOPY_ALIGN_32B", std::string(op) + ": Unified Buffer address " + std::to_string(off) + " is not 32-byte aligned");
}
template <class T>
inline void UbFits(const LocalTensor<T>& t, uint64_t bytes, const char* op) {
    if (bytes > uint64_t(t.GetSize()) * sizeof(T))
        ascendc_twin::Violate("UB_BOUNDS", std::string(op) + " writes/reads " + std::to_string(bytes) + " bytes of a LocalTensor of " + std::to_string(uint64_t(t.GetSize()) * sizeof(T)));
}
// Atlas A2/A3 ranges: blockCount 1..4095; DataCopyExtParams::blockLen 1..2097151 bytes
inline void PadParams(uint32_t count, uint32_t len, const char* op) {
    if (count < 1 || count > 4095)
        ascendc_twin::Violate("DATACOPY_PARAMS", std::string(op) + ": blockCount " + std::to_string(count) + " outside 1..4095");
    if (len < 1 || len > 2097151)
        ascendc_twin::Violate("DATACOPY_PARAMS", std::string(op) + ": blockLen " + std::to_string(len) + " bytes outside 1..2097151");
}
inline void Len32(uint64_t bytes, const char* op) {
    if (bytes % 32 != 0)
        ascendc_twin::Violate("DATACOPY_ALIGN_32B", std::string(op) + " moves " + std::to_string(bytes) + " bytes, not a multiple of 32 (use DataCopyPad for unaligned lengths)");
}
}  // namespace detail

// GM -> UB, count elements (count * sizeof(T) must be a multiple of 32 bytes)
template <class T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t count) {
    uint64_t bytes = uint64_t(count) * sizeof(T);
    detail::UbAligned(dst, "DataCopy(GM->UB)");
    detail::Len32(bytes, "DataCopy(GM->UB)");
    detail::UbFits(dst, bytes, "DataCopy(GM->UB)");
    src.CheckRange(count, "DataCopy(GM->UB)");
    ascendc_twin::UbAccess(ascendc_twin::kMTE2, dst.GetPhyAddr(), bytes, true, "DataCopy(GM->UB)");
    std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

// UB -> GM
template <class T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count) {
    uint64_t bytes = uint64_t(count) * sizeof(T);
    detail::UbAligned(src, "DataCopy(UB->GM)");
    detail::Len32(bytes, "DataCopy(UB->GM)");
    detail::UbFits(src, bytes, "DataCopy(UB->GM)");
    dst.CheckRange(count, "DataCopy(UB->GM)");
    ascendc_twin::UbAccess(ascendc_twin::kMTE3, src.GetPhyAddr(), bytes, false, "DataCopy(UB->GM)");
    std::memcpy(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

// UB -> UB
template <class T>
inline void DataCopy(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint32_t count) {
    uint64_t bytes = uint64_t(count) * sizeof(T);
    detail::UbAligned(dst, "DataCopy(UB->UB)");
    detail::UbAligned(src, "DataCopy(UB->UB)");
    detail::Len32(bytes, "DataCopy(UB->UB)");
    detail::UbFits(dst, bytes, "DataCopy(UB->UB)");
    detail::UbFits(src, bytes, "DataCopy(UB->UB)");
    ascendc_twin::UbAccess(ascendc_twin::kV, src.GetPhyAddr(), bytes, false, "DataCopy(UB->UB)");
    ascendc_twin::UbAccess(ascendc_twin::kV, dst.GetPhyAddr(), bytes, true, "DataCopy(UB->UB)");
    std::memmove(dst.GetPhyAddr(), src.GetPhyAddr(), bytes);
}

// GM -> UB in blocks of 32 bytes with strides
template <class T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p) {
    detail::UbAligned(dst, "DataCopy(GM->UB, params)");
    detail::PadParams(p.blockCount, p.blockLen, "DataCopy(GM->UB, params)");
    uint64_t len = uint64_t(p.blockLen) * 32, last = 0;
    for (uint32_t i = 0; i < p.blockCount; ++i) {
        uint64_t s = i * (len + uint64_t(p.srcStride) * 32), d = i * (len + uint64_t(p.dstStride) * 32);
        detail::UbFits(dst, d + len, "DataCopy(GM->UB, params)");
        ascendc_twin::UbAccess(ascendc_twin::kMTE2, reinterpret_cast<uint8_t*>(dst.GetPhyAddr()) + d, len, true, "DataCopy(GM->UB, params)");
        last = s + len;
        std::memcpy(reinterpret_cast<uint8_t*>(dst.GetPhyAddr()) + d, reinterpret_cast<const uint8_t*>(src.GetPhyAddr()) + s, len);
    }
    if (last % sizeof(T) != 0) ascendc_twin::Violate("DATACOPY_ALIGN_32B", "DataCopy(GM->UB, params) block not a whole number of elements");
    src.CheckRange(last / sizeof(T), "DataCopy(GM->UB, params)");
}

// GM -> UB, any byte length per block; each block lands on a 32-byte boundary in UB.
template <class T>
inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p, const DataCopyPadExtParams<T>& pad) {
    detail::UbAligned(dst, "DataCopyPad(GM->UB)");
    detail::PadParams(p.blockCount, p.blockLen, "DataCopyPad(GM->UB)");
    if (p.blockLen % sizeof(T) != 0) ascendc_twin::Violate("DATACOPY_PAD_LEN", "DataCopyPad blockLen " + std::to_string(p.blockLen) + " is not a whole number of " + ascendc_twin::TypeName<T>());
    uint64_t left = uint64_t(pad.leftPadding) * sizeof(T), right = uint64_t(pad.rightPadding) * sizeof(T);
    uint64_t slot = (left + p.blockLen + right + 31) / 32 * 32;
    if (pad.isPad && left + p.blockLen + right > slot) ascendc_twin::Violate("DATACOPY_PAD_LEN", "DataCopyPad padding exceeds one 32-byte block");
    uint64_t gmEnd = 0;
    for (uint32_t i = 0; i < p.blockCount; ++i) {
        uint64_t s = i * (uint64_t(p.blockLen) + p.srcStride), d = i * (slot + uint64_t(p.dstStride) * 32);
        detail::UbFits(dst, d + slot, "DataCopyPad(GM->UB)");
        uint8_t* out = reinterpret_cast<uint8_t*>(dst.GetPhyAddr()) + d;
        ascendc_twin::UbAccess(ascendc_twin::kMTE2, out, slot, true, "DataCopyPad(GM->UB)");
        std::memset(out, detail::kPoison, slot);
        std::memcpy(out + left, reinterpret_cast<const uint8_t*>(src.GetPhyAddr()) + s, p.blockLen);
        if (pad.isPad) {
            T* e = reinterpret_cast<T*>(out);
            for (uint64_t k = 0; k < left / sizeof(T); ++k) e[k] = pad.paddingValue;
            for (uint64_t k = (left + p.blockLen) / sizeof(T); k < slot / sizeof(T); ++k) e[k] = pad.paddingValue;
        }
        gmEnd = s + p.blockLen;
    }
    src.CheckRange(gmEnd / sizeof(T), "DataCopyPad(GM->UB)");
}

// UB -> GM, any byte length per block; UB blocks start on 32-byte boundaries.
template <class T>
inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p) {
    detail::UbAligned(src, "DataCopyPad(UB->GM)");
    detail::PadParams(p.blockCount, p.blockLen, "DataCopyPad(UB->GM)");
    if (p.blockLen % sizeof(T) != 0) ascendc_twin::Violate("DATACOPY_PAD_LEN", "DataCopyPad blockLen " + std::to_string(p.blockLen) + " is not a whole number of " + ascendc_twin::TypeName<T>());
    uint64_t slot = (uint64_t(p.blockLen) + 31) / 32 * 32, gmEnd = 0;
    for (uint32_t i = 0; i < p.blockCount; ++i) {
        uint64_t s = i * (slot + uint64_t(p.srcStride) * 32), d = i * (uint64_t(p.blockLen) + p.dstStride);
        detail::UbFits(src, s + p.blockLen, "DataCopyPad(UB->GM)");
        gmEnd = d + p.blockLen;
        dst.CheckRange(gmEnd / sizeof(T), "DataCopyPad(UB->GM)");
        ascendc_twin::UbAccess(ascendc_twin::kMTE3, reinterpret_cast<const uint8_t*>(src.GetPhyAddr()) + s, p.blockLen, false, "DataCopyPad(UB->GM)");
        std::memcpy(reinterpret_cast<uint8_t*>(dst.GetPhyAddr()) + d, reinterpret_cast<const uint8_t*>(src.GetPhyAddr()) + s, p.blockLen);
    }
}

}  // namespace AscendC
