// Runs every block of a kernel launch in order on the calling thread, each with a fresh Unified
// Buffer, and turns rule violations into an error code plus a message for Python.
#pragma once
#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
#include "hazard.h"
#include "runtime.h"
#include "sync.h"

namespace ascendc_twin {

enum ErrCode { kOk = 0, kRule = 1, kBadArg = 2, kOther = 3 };

class BadArgument : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};
[[noreturn]] inline void BadArg(const std::string& msg) { throw BadArgument(msg); }

inline bool& Quiet() {
    static bool quiet = false;  // the numpy path reads the message itself; MindSpore needs stderr
    return quiet;
}

inline std::string& LastError() {
    static std::string msg;  // process-wide: MindSpore may launch on another thread
    return msg;
}

struct LaunchSpec {
    std::string kernel;
    uint32_t blockDim = 1;
    uint64_t tilingKey = 0;
    std::vector<GmRegion> gm;  // every GM buffer the kernel may touch
};

template <class F>
void Launch(const LaunchSpec& spec, F&& body) {
    if (spec.blockDim == 0) throw RuleViolation(spec.kernel + ": rule BLOCK_DIM: launched with blockDim 0");
    if (CurrentSoc().ubBytes == 0) BadArg(spec.kernel + ": no SoC selected (custom_ops.runtime.set_soc)");
    BlockContext ctx;
    ctx.kernel = spec.kernel;
    ctx.blockNum = spec.blockDim;
    ctx.soc = CurrentSoc();
    ctx.gm = spec.gm;
    ctx.tilingKey = spec.tilingKey;
    ctx.ub.resize(ctx.soc.ubBytes);
    Hazards hz;
    ctx.hz = &hz;
    struct Reset { ~Reset() { Ctx() = nullptr; } } reset;
    Ctx() = &ctx;
    for (uint32_t b = 0; b < spec.blockDim; ++b) {
        ctx.blockIdx = b;
        ctx.ubUsed = 0;
        std::fill(ctx.ub.begin(), ctx.ub.end(), uint8_t(0xff));  // UB content is undefined at start
        ctx.deferred.clear();
        hz.Reset(ctx.ub.size());
        for (auto& row : ctx.events) for (int& n : row) n = 0;
        body();
        if (!ctx.deferred.empty()) throw RuleViolation(ctx.deferred.front());
        for (int e = 0; e < 16; ++e)
            for (int i = 0; i < 8; ++i)
                if (ctx.events[e][i] != 0)
                    Violate("EVENT_BALANCE", std::string("SetFlag<") + AscendC::EventName(static_cast<AscendC::HardEvent>(e)) + ">(" + std::to_string(i) + ") never waited for by the end of the block");
    }
}

// Calls f(); maps exceptions to an error code and keeps the message for ascendc_twin_last_error().
template <class F>
int Guard(F&& f) {
    try {
        f();
        LastError().clear();
        return kOk;
    } catch (const RuleViolation& e) {
        LastError() = e.what();
        if (!Quiet()) std::fprintf(stderr, "[ascendc-twin] %s\n", e.what());
        return kRule;
    } catch (const BadArgument& e) {
        LastError() = e.what();
        if (!Quiet()) std::fprintf(stderr, "[ascendc-twin] %s\n", e.what());
        return kBadArg;
    } catch (const std::exception& e) {
        LastError() = e.what();
        if (!Quiet()) std::fprintf(stderr, "[ascendc-twin] %s\n", e.what());
        return kOther;
    }
}

}  // namespace ascendc_twin

#define ASCENDC_TWIN_API extern "C" __attribute__((visibility("default")))

// One copy per shared object: error message and SoC selection for Python.
#define ASCENDC_TWIN_EXPORTS                                                                          \
    ASCENDC_TWIN_API const char* ascendc_twin_last_error() { return ascendc_twin::LastError().c_str(); }    \
    ASCENDC_TWIN_API int ascendc_twin_set_soc(const char* name, uint32_t ub, uint32_t cores, const char* dtypes) { \
        if (name == nullptr || ub == 0 || cores == 0) return ascendc_twin::kBadArg;                   \
        ascendc_twin::SocSpec s;                                                                      \
        s.name = name; s.ubBytes = ub; s.vectorCores = cores;                                         \
        s.vectorDtypes = ascendc_twin::ParseVectorDtypes(dtypes);                                     \
        s.fp8VectorCast = (s.vectorDtypes & ascendc_twin::kFp8E4m3) != 0;                             \
        ascendc_twin::CurrentSoc() = s;                                                               \
        return ascendc_twin::kOk;                                                                     \
    }                                                                                                 \
    ASCENDC_TWIN_API void ascendc_twin_set_quiet(int q) { ascendc_twin::Quiet() = q != 0; }
