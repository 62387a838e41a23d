// The SoC the CPU twin enforces (per vector core).  The twin holds no figures of its own: Python
// hands them over from custom_ops/runtime/soc_profiles.py (the one owner, with sources) through
// ascendc_twin_set_soc before any launch.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace ascendc_twin {

// Vector-unit data types the twin can check (names as in soc_profiles.VECTOR_DTYPES).
enum VectorDtype : uint32_t {
    kFp32 = 1u << 0, kFp16 = 1u << 1, kBf16 = 1u << 2, kFp8E4m3 = 1u << 3, kInt8 = 1u << 4, kUint8 = 1u << 5,
    kInt16 = 1u << 6, kUint16 = 1u << 7, kInt32 = 1u << 8, kUint32 = 1u << 9, kInt64 = 1u << 10,
};

// Bit of a comma-separated name list ("fp32,bf16,..."); names the twin has no type for are ignored.
inline uint32_t ParseVectorDtypes(const char* list) {
    static const struct { const char* name; uint32_t bit; } kNames[] = {
        {"fp32", kFp32}, {"fp16", kFp16}, {"bf16", kBf16}, {"fp8_e4m3", kFp8E4m3}, {"int8", kInt8},
        {"uint8", kUint8}, {"int16", kInt16}, {"uint16", kUint16}, {"int32", kInt32}, {"uint32", kUint32},
        {"int64", kInt64}};
    uint32_t mask = 0;
    std::string s = std::string(",") + (list ? list : "") + ",";
    for (const auto& n : kNames)
        if (s.find(std::string(",") + n.name + ",") != std::string::npos) mask |= n.bit;
    return mask;
}

struct SocSpec {
    std::string name;              // empty until Python selects a SoC
    uint32_t ubBytes = 0;          // Unified Buffer per vector core (AIV)
    uint32_t vectorCores = 0;      // AIV cores a kernel's blockDim is planned for
    uint32_t vectorDtypes = 0;     // VectorDtype bits the vector unit supports
    bool fp8VectorCast = false;    // vector Cast to/from fp8_e4m3fn_t exists (derived from vectorDtypes)
};

// Process-wide current SoC (set from Python through ascendc_twin_set_soc).
inline SocSpec& CurrentSoc() {
    static SocSpec soc;
    return soc;
}

}  // namespace ascendc_twin
