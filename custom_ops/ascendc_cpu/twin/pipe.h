// TPipe / TQue / TBuf: Unified Buffer allocation and queue discipline.
#pragma once
#include <cstdint>
#include <deque>
#include <string>
#include <vector>
#include "tensor.h"

namespace AscendC {

namespace detail {
enum class Slot : uint8_t { Free, Allocated, Queued, Dequeued };
// the pipes a queue hands buffers between: VECIN MTE2 -> V, VECOUT V -> MTE3 (-1: no hand-over)
constexpr int Producer(TPosition p) { return p == TPosition::VECIN ? ascendc_twin::kMTE2 : p == TPosition::VECOUT ? ascendc_twin::kV : -1; }
constexpr int Consumer(TPosition p) { return p == TPosition::VECIN ? ascendc_twin::kV : p == TPosition::VECOUT ? ascendc_twin::kMTE3 : -1; }
inline ascendc_twin::Hazards* Hz() { return ascendc_twin::Ctx() ? ascendc_twin::Ctx()->hz : nullptr; }
inline int32_t NextQueueId() { thread_local int32_t id = 0; return ++id; }
}  // namespace detail

class TPipe;

// A queue of `num` buffers (set by TPipe::InitBuffer); depth = max tensors queued at once.
template <TPosition POS, int32_t DEPTH = 1>
class TQue {
public:
    TQue() : id_(detail::NextQueueId()) {}
    ~TQue() {
        for (size_t i = 0; i < slots_.size(); ++i) {
            if (slots_[i] == detail::Slot::Allocated || slots_[i] == detail::Slot::Dequeued)
                ascendc_twin::Defer("QUEUE_BALANCE", "buffer " + std::to_string(i) + " of a TQue was allocated (AllocTensor/DeQue) but never FreeTensor'd");
            else if (slots_[i] == detail::Slot::Queued)
                ascendc_twin::Defer("QUEUE_BALANCE", "buffer " + std::to_string(i) + " of a TQue was EnQue'd but never DeQue'd");
        }
    }
    template <class T>
    LocalTensor<T> AllocTensor() {
        if (slots_.empty()) ascendc_twin::Violate("QUEUE_INIT", "AllocTensor on a TQue that TPipe::InitBuffer never set up");
        for (size_t i = 0; i < slots_.size(); ++i) {
            if (slots_[i] == detail::Slot::Free) {
                slots_[i] = detail::Slot::Allocated;
                if (detail::Producer(POS) >= 0 && detail::Hz()) detail::Hz()->Order(detail::Producer(POS), detail::Consumer(POS), freed_[i]);
                return LocalTensor<T>(reinterpret_cast<T*>(base_ + i * len_), static_cast<uint32_t>(len_ / sizeof(T)), id_, static_cast<int32_t>(i));
            }
        }
        ascendc_twin::Violate("QUEUE_ALLOC", "AllocTensor with all " + std::to_string(slots_.size()) + " buffers of the TQue in use (FreeTensor first; the hardware would stall)");
    }
    template <class T>
    bool EnQue(const LocalTensor<T>& t) {
        Own(t, "EnQue");
        if (slots_[t.Buf()] != detail::Slot::Allocated)
            ascendc_twin::Violate("QUEUE_ORDER", "EnQue of a tensor that is not freshly allocated from this TQue");
        if (static_cast<int32_t>(fifo_.size()) >= DEPTH)
            ascendc_twin::Violate("QUEUE_DEPTH", "EnQue beyond the TQue depth " + std::to_string(DEPTH));
        slots_[t.Buf()] = detail::Slot::Queued;
        fifo_.push_back(t.Buf());
        if (detail::Producer(POS) >= 0 && detail::Hz()) queued_[t.Buf()] = detail::Hz()->Take(detail::Producer(POS));
        return true;
    }
    template <class T>
    LocalTensor<T> DeQue() {
        if (fifo_.empty()) ascendc_twin::Violate("QUEUE_EMPTY", "DeQue on an empty TQue (no matching EnQue; the hardware would hang)");
        int32_t i = fifo_.front();
        fifo_.pop_front();
        slots_[i] = detail::Slot::Dequeued;
        if (detail::Producer(POS) >= 0 && detail::Hz()) detail::Hz()->Order(detail::Consumer(POS), detail::Producer(POS), queued_[i]);
        return LocalTensor<T>(reinterpret_cast<T*>(base_ + i * len_), static_cast<uint32_t>(len_ / sizeof(T)), id_, i);
    }
    template <class T>
    void FreeTensor(const LocalTensor<T>& t) {
        Own(t, "FreeTensor");
        if (slots_[t.Buf()] == detail::Slot::Free)
            ascendc_twin::Violate("QUEUE_FREE", "FreeTensor of a buffer that is already free (double free)");
        if (slots_[t.Buf()] == detail::Slot::Queued)
            ascendc_twin::Violate("QUEUE_FREE", "FreeTensor of a buffer still in the queue (DeQue it first)");
        slots_[t.Buf()] = detail::Slot::Free;
        if (detail::Producer(POS) >= 0 && detail::Hz()) freed_[t.Buf()] = detail::Hz()->Take(detail::Consumer(POS));
    }
    bool VacantInQue() const { return static_cast<int32_t>(fifo_.size()) < DEPTH; }

private:
    friend class TPipe;
    template <class T>
    void Own(const LocalTensor<T>& t, const char* op) const {
        if (t.Owner() != id_ || t.Buf() < 0 || t.Buf() >= static_cast<int32_t>(slots_.size()))
            ascendc_twin::Violate("QUEUE_OWNER", std::string(op) + " of a tensor that was not allocated from this TQue");
    }
    int32_t id_;
    uint8_t* base_ = nullptr;
    uint32_t len_ = 0;
    std::vector<detail::Slot> slots_;
    std::vector<ascendc_twin::Snapshot> queued_, freed_;  // hand-over points per buffer
    std::deque<int32_t> fifo_;
};

// A plain calculation buffer.
template <TPosition POS = TPosition::VECCALC>
class TBuf {
public:
    template <class T>
    LocalTensor<T> Get() const { return Get<T>(len_ / sizeof(T)); }
    template <class T>
    LocalTensor<T> Get(uint32_t n) const {
        if (base_ == nullptr) ascendc_twin::Violate("QUEUE_INIT", "TBuf::Get on a TBuf that TPipe::InitBuffer never set up");
        if (uint64_t(n) * sizeof(T) > len_) ascendc_twin::Violate("UB_BOUNDS", "TBuf::Get of " + std::to_string(n) + " elements exceeds its " + std::to_string(len_) + " bytes");
        return LocalTensor<T>(reinterpret_cast<T*>(base_), n, -1, -1);
    }

private:
    friend class TPipe;
    uint8_t* base_ = nullptr;
    uint32_t len_ = 0;
};

class TPipe {
public:
    template <TPosition POS, int32_t DEPTH>
    bool InitBuffer(TQue<POS, DEPTH>& q, uint8_t num, uint32_t len) {
        uint32_t aligned = Align(len);
        q.base_ = Take(uint64_t(aligned) * num, "TQue");
        q.len_ = aligned;
        q.slots_.assign(num, detail::Slot::Free);
        q.queued_.assign(num, ascendc_twin::Snapshot{});
        q.freed_.assign(num, ascendc_twin::Snapshot{});
        return true;
    }
    template <TPosition POS>
    bool InitBuffer(TBuf<POS>& b, uint32_t len) {
        b.base_ = Take(Align(len), "TBuf");
        b.len_ = Align(len);
        return true;
    }
    void Destroy() {}
    void Reset() { ascendc_twin::Ctx()->ubUsed = 0; }

private:
    static uint32_t Align(uint32_t n) { return (n + 31u) / 32u * 32u; }
    static uint8_t* Take(uint64_t bytes, const char* what) {
        ascendc_twin::BlockContext* c = ascendc_twin::Ctx();
        if (c->ubUsed + bytes > c->soc.ubBytes)
            ascendc_twin::Violate("UB_CAPACITY", std::string("InitBuffer(") + what + ", " + std::to_string(bytes) + " bytes) brings the Unified Buffer to " +
                std::to_string(c->ubUsed + bytes) + " bytes, over the " + std::to_string(c->soc.ubBytes) + " bytes of " + c->soc.name);
        uint8_t* p = c->ub.data() + c->ubUsed;
        c->ubUsed += static_cast<uint32_t>(bytes);
        return p;
    }
};

}  // namespace AscendC
