// Per-block execution context, rule violations and GM region bookkeeping.
#pragma once
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <vector>
#include "soc_spec.h"

namespace ascendc_twin {

// A broken hardware rule; what() = "<kernel>: rule <RULE>: <detail> (block i of n)".
class RuleViolation : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Hazards;

struct GmRegion {
    const uint8_t* ptr;
    uint64_t bytes;
    std::string name;
};

struct BlockContext {
    std::string kernel;
    int64_t blockIdx = 0;
    int64_t blockNum = 1;
    SocSpec soc;
    std::vector<uint8_t> ub;                // this core's Unified Buffer
    uint32_t ubUsed = 0;                    // bytes handed out by TPipe::InitBuffer
    std::vector<GmRegion> gm;               // GM tensors the launch registered
    size_t lastGm = 0;
    std::vector<std::string> deferred;      // violations found in destructors
    int events[16][8] = {};                 // SetFlag minus WaitFlag per (HardEvent, id)
    uint64_t tilingKey = 0;
    struct Hazards* hz = nullptr;           // pipeline ordering state (hazard.h)
};

inline BlockContext*& Ctx() {
    thread_local BlockContext* ctx = nullptr;
    return ctx;
}

inline std::string Where() {
    BlockContext* c = Ctx();
    if (c == nullptr) return "(outside a kernel launch)";
    return "(block " + std::to_string(c->blockIdx) + " of " + std::to_string(c->blockNum) + ")";
}

[[noreturn]] inline void Violate(const char* rule, const std::string& detail) {
    BlockContext* c = Ctx();
    std::string kernel = c ? c->kernel : std::string("?");
    throw RuleViolation(kernel + ": rule " + rule + ": " + detail + " " + Where());
}

// Recorded from destructors (which must not throw); raised after the block ends.
inline void Defer(const char* rule, const std::string& detail) {
    BlockContext* c = Ctx();
    if (c == nullptr) return;
    c->deferred.push_back(c->kernel + ": rule " + rule + ": " + detail + " " + Where());
}

// Every GM access must stay inside one registered input/output tensor.
inline void CheckGm(const void* p, uint64_t bytes, const char* op) {
    BlockContext* c = Ctx();
    if (c == nullptr) return;
    const uint8_t* b = static_cast<const uint8_t*>(p);
    if (c->lastGm < c->gm.size()) {  // most accesses hit the region of the previous one
        const GmRegion& r = c->gm[c->lastGm];
        if (b >= r.ptr && b + bytes <= r.ptr + r.bytes) return;
    }
    for (size_t i = 0; i < c->gm.size(); ++i) {
        const GmRegion& r = c->gm[i];
        if (b >= r.ptr && b + bytes <= r.ptr + r.bytes) { c->lastGm = i; return; }
    }
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%s touches %llu bytes of global memory outside every kernel argument",
                  op, static_cast<unsigned long long>(bytes));
    Violate("GM_BOUNDS", buf);
}

inline uint64_t UbOffset(const void* p) {
    return static_cast<uint64_t>(static_cast<const uint8_t*>(p) - Ctx()->ub.data());
}

}  // namespace ascendc_twin
