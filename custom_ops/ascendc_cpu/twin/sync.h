// Pipeline synchronisation and block queries.  The twin runs instructions in program order, so these
// only check that SetFlag/WaitFlag pairs balance (an unmatched WaitFlag hangs real hardware).
#pragma once
#include <string>
#include "hazard.h"
#include "runtime.h"

enum pipe_t { PIPE_S, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_ALL };
using event_t = int32_t;
enum { EVENT_ID0 = 0, EVENT_ID1, EVENT_ID2, EVENT_ID3, EVENT_ID4, EVENT_ID5, EVENT_ID6, EVENT_ID7 };

namespace AscendC {

enum class HardEvent : uint8_t { MTE2_V, V_MTE2, MTE3_V, V_MTE3, MTE2_MTE3, MTE3_MTE2, S_V, V_S, MTE2_S, S_MTE2, MTE3_S, S_MTE3, MAX };

inline const char* EventName(HardEvent e) {
    static const char* names[] = {"MTE2_V", "V_MTE2", "MTE3_V", "V_MTE3", "MTE2_MTE3", "MTE3_MTE2", "S_V", "V_S",
                                  "MTE2_S", "S_MTE2", "MTE3_S", "S_MTE3", "MAX"};
    return names[static_cast<int>(e)];
}

// (producer, consumer) pipes of an event
inline void EventPipes(HardEvent e, int& src, int& dst) {
    using namespace ascendc_twin;
    static const int map[12][2] = {{kMTE2, kV}, {kV, kMTE2}, {kMTE3, kV}, {kV, kMTE3}, {kMTE2, kMTE3}, {kMTE3, kMTE2},
                                   {kS, kV}, {kV, kS}, {kMTE2, kS}, {kS, kMTE2}, {kMTE3, kS}, {kS, kMTE3}};
    src = map[static_cast<int>(e)][0];
    dst = map[static_cast<int>(e)][1];
}

// PIPE_ALL waits for every pipeline; a barrier on one pipe orders nothing across pipes.
template <pipe_t P>
inline void PipeBarrier() {
    if (P == PIPE_ALL && ascendc_twin::Ctx() && ascendc_twin::Ctx()->hz) ascendc_twin::Ctx()->hz->BarrierAll();
}

template <HardEvent E>
inline void SetFlag(event_t id) {
    if (id < 0 || id > 7) ascendc_twin::Violate("EVENT_ID", "SetFlag event id " + std::to_string(id) + " outside 0..7");
    ascendc_twin::Ctx()->events[static_cast<int>(E)][id] += 1;
    if (ascendc_twin::Hazards* h = ascendc_twin::Ctx()->hz) {
        int src, dst;
        EventPipes(E, src, dst);
        h->flags[static_cast<int>(E)][id].push_back(h->Take(src));
    }
}

template <HardEvent E>
inline void WaitFlag(event_t id) {
    if (id < 0 || id > 7) ascendc_twin::Violate("EVENT_ID", "WaitFlag event id " + std::to_string(id) + " outside 0..7");
    int& n = ascendc_twin::Ctx()->events[static_cast<int>(E)][id];
    if (n <= 0) ascendc_twin::Violate("EVENT_BALANCE", std::string("WaitFlag<") + EventName(E) + ">(" + std::to_string(id) + ") with no earlier SetFlag (the hardware would hang)");
    n -= 1;
    if (ascendc_twin::Hazards* h = ascendc_twin::Ctx()->hz) {
        int src, dst;
        EventPipes(E, src, dst);
        auto& q = h->flags[static_cast<int>(E)][id];
        h->Order(dst, src, q.front());
        q.pop_front();
    }
}

inline int64_t GetBlockIdx() { return ascendc_twin::Ctx()->blockIdx; }
inline int64_t GetBlockNum() { return ascendc_twin::Ctx()->blockNum; }

}  // namespace AscendC
