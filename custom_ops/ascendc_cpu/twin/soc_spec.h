// SoC figures the CPU twin enforces (per vector core).  See README.md for sources.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace ascendc_twin {

struct SocSpec {
    std::string name = "Ascend910B";
    uint32_t ubBytes = 192 * 1024;  // Unified Buffer per vector core (AIV)
    uint32_t vectorCores = 48;      // AIV cores a kernel's blockDim is planned for
    bool fp8VectorCast = false;     // vector Cast to/from fp8_e4m3fn_t exists
};

// Known SoCs; returns false for an unknown name.
inline bool LookupSoc(const char* name, SocSpec& out) {
    if (std::strcmp(name, "Ascend910B") == 0 || std::strcmp(name, "Ascend910_93") == 0) {
        out = SocSpec{};
        out.name = name;
        return true;
    }
    return false;
}

// Process-wide current SoC (set from Python through ascendc_twin_set_soc).
inline SocSpec& CurrentSoc() {
    static SocSpec soc;
    return soc;
}

}  // namespace ascendc_twin
