// Cross-pipeline ordering of Unified Buffer accesses.  The AI core runs MTE2 (GM->UB copies), V (vector),
// MTE3 (UB->GM copies) and S (scalar) as independent pipelines; an access by one pipeline to UB bytes
// that another pipeline wrote (or still reads) is only ordered by SetFlag/WaitFlag, PipeBarrier<PIPE_ALL>
// or a queue hand-over (EnQue/DeQue, FreeTensor/AllocTensor).  The twin executes in program order, so it
// checks instead that every such cross-pipeline dependency has one of those between the two accesses.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <deque>
#include <string>
#include <vector>
#include "runtime.h"

namespace ascendc_twin {

enum Pipe : int { kMTE2 = 0, kV = 1, kMTE3 = 2, kS = 3, kPipes = 4 };

inline const char* PipeName(int p) {
    static const char* n[] = {"MTE2 (GM->UB copy)", "V (vector)", "MTE3 (UB->GM copy)", "S (scalar)"};
    return n[p];
}
inline const char* PipeTag(int p) {
    static const char* n[] = {"MTE2", "V", "MTE3", "S"};
    return n[p];
}

struct Snapshot {
    uint64_t seq = 0;                 // producer's operation count at the hand-over
    uint64_t view[kPipes] = {};       // what the producer itself had waited for (transitive ordering)
};

struct Hazards {
    uint64_t seq[kPipes] = {};
    uint64_t view[kPipes][kPipes] = {};  // view[p][q]: pipe p is ordered after q's operations <= this
    uint64_t lastRead[kPipes] = {};      // seq of each pipe's latest UB read (fast path)
    std::vector<uint64_t> writer;        // per 32-byte UB block: (seq << 2) | pipe of the last write, 0 = none
    std::vector<uint64_t> rSeq[kPipes];  // per block: latest read by each pipe (scalar reads not tracked)
    std::deque<Snapshot> flags[16][8];
    std::vector<uint32_t> sList[kPipes];   // per pipe: blocks with scalar stores that may be unordered for it
    std::vector<uint8_t> sListed[kPipes];   // membership bits of sList

    void Reset(size_t ubBytes) {
        size_t n = (ubBytes + 31) / 32;
        std::memset(seq, 0, sizeof(seq));
        std::memset(view, 0, sizeof(view));
        std::memset(lastRead, 0, sizeof(lastRead));
        writer.assign(n, 0);
        for (auto& r : rSeq) r.assign(n, 0);
        for (auto& row : flags) for (auto& q : row) q.clear();
        for (int q = 0; q < kPipes; ++q) { sList[q].clear(); sListed[q].assign(n, 0); }
    }
    Snapshot Take(int producer) const {
        Snapshot s;
        s.seq = seq[producer];
        for (int q = 0; q < kPipes; ++q) s.view[q] = view[producer][q];
        return s;
    }
    void Order(int consumer, int producer, const Snapshot& s) {  // consumer now runs after the snapshot
        view[consumer][producer] = std::max(view[consumer][producer], s.seq);
        for (int q = 0; q < kPipes; ++q) view[consumer][q] = std::max(view[consumer][q], s.view[q]);
    }
    void BarrierAll() {
        for (int p = 0; p < kPipes; ++p)
            for (int q = 0; q < kPipes; ++q) view[p][q] = seq[q];
    }
};

[[noreturn]] inline void Unordered(int pipe, int other, uint64_t byte, bool write, bool war, const char* op) {
    if (war)
        Violate("PIPE_SYNC", std::string(op) + " (pipe " + PipeName(pipe) + ") overwrites Unified Buffer byte " +
                std::to_string(byte) + " that pipe " + PipeName(other) + " still reads (no SetFlag/WaitFlag<HardEvent::" +
                PipeTag(other) + "_" + PipeTag(pipe) + "> or queue hand-over in between)");
    Violate("PIPE_SYNC", std::string(op) + " (pipe " + PipeName(pipe) + ") " + (write ? "overwrites" : "reads") +
            " Unified Buffer byte " + std::to_string(byte) + " written by pipe " + PipeName(other) +
            " with no SetFlag/WaitFlag<HardEvent::" + PipeTag(other) + "_" + PipeTag(pipe) +
            ">, PipeBarrier<PIPE_ALL> or queue hand-over in between");
}

// Pipe `pipe` reads or writes UB bytes [p, p + bytes).
inline void UbAccess(int pipe, const void* p, uint64_t bytes, bool write, const char* op) {
    BlockContext* c = Ctx();
    if (c == nullptr || c->hz == nullptr || bytes == 0) return;
    Hazards& h = *c->hz;
    uint64_t off = UbOffset(p), b0 = off / 32, b1 = std::min<uint64_t>((off + bytes + 31) / 32, h.writer.size());
    uint64_t s = ++h.seq[pipe];
    if (pipe == kS && b1 == b0 + 1) {  // scalar element access: one block
        uint64_t st = h.writer[b0], wp = st & 3;
        if ((st >> 2) != 0 && wp != kS && h.view[kS][wp] < (st >> 2)) Unordered(kS, static_cast<int>(wp), b0 * 32, write, false, op);
        if (!write) return;
        for (int q = 0; q < kPipes; ++q) {
            if (q == kS) continue;
            if (h.rSeq[q][b0] > h.view[kS][q]) Unordered(kS, q, b0 * 32, true, true, op);
            if (!h.sListed[q][b0]) { h.sListed[q][b0] = 1; h.sList[q].push_back(static_cast<uint32_t>(b0)); }
        }
        h.writer[b0] = (s << 2) | kS;
        return;
    }
    // fast path: every other pipe's writes (and, for a write, reads) are already ordered before this pipe
    bool raw = false, war = false;
    for (int q = 0; q < kPipes; ++q) {
        if (q == pipe || q == kS) continue;
        raw = raw || h.seq[q] > h.view[pipe][q];
    }
    for (int q = 0; q < kPipes; ++q) war = war || (q != pipe && write && h.lastRead[q] > h.view[pipe][q]);
    uint64_t* w = h.writer.data();
    if (raw) {  // bulk pipes, block by block
        for (uint64_t b = b0; b < b1; ++b) {
            uint64_t wp = w[b] & 3, ws = w[b] >> 2;
            if (ws != 0 && wp != kS && static_cast<int>(wp) != pipe && h.view[pipe][wp] < ws)
                Unordered(pipe, static_cast<int>(wp), b * 32, write, false, op);
        }
    }
    if (pipe != kS && !h.sList[pipe].empty()) {  // scalar stores this pipe may not be ordered after
        auto& l = h.sList[pipe];
        for (size_t i = 0; i < l.size();) {
            uint64_t b = l[i], st = w[b];
            if ((st & 3) != kS || (st >> 2) <= h.view[pipe][kS]) {  // overwritten or ordered since: drop
                h.sListed[pipe][b] = 0;
                l[i] = l.back();
                l.pop_back();
                continue;
            }
            if (b >= b0 && b < b1) Unordered(pipe, kS, b * 32, write, false, op);
            ++i;
        }
    }
    if (war) {
        for (int q = 0; q < kPipes; ++q) {
            if (q == pipe || h.lastRead[q] <= h.view[pipe][q]) continue;
            const uint64_t* r = h.rSeq[q].data();
            for (uint64_t b = b0; b < b1; ++b)
                if (r[b] > h.view[pipe][q]) Unordered(pipe, q, b * 32, true, true, op);
        }
    }
    if (write) {
        uint64_t stamp = (s << 2) | static_cast<uint64_t>(pipe);
        std::fill(w + b0, w + b1, stamp);
        if (pipe == kS)
            for (int q = 0; q < kPipes; ++q)
                for (uint64_t b = b0; b < b1 && q != kS; ++b)
                    if (!h.sListed[q][b]) { h.sListed[q][b] = 1; h.sList[q].push_back(static_cast<uint32_t>(b)); }
    } else if (pipe != kS) {  // the scalar unit issues every later instruction itself: its reads are not tracked
        std::fill(h.rSeq[pipe].data() + b0, h.rSeq[pipe].data() + b1, s);
        h.lastRead[pipe] = s;
    }
}

}  // namespace ascendc_twin
