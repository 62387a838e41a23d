// moe_combine: y[t] = sum_j w[t, j] * expert_out[slot_of[t, j]] in fp32 (j in order; slot -1 = skipped).
// expert_out [N, D] f32/bf16 (rows in moe_dispatch's layout), slot_of [T, k] i32, topk_weights [T, k] f32
// -> y [T, D] f32.  Blocks own contiguous token ranges; D is walked in UB chunks with a tail.
#include "kernel_operator.h"
using namespace AscendC;

namespace mck {
template <class A, class B> struct Same { static constexpr bool value = false; };
template <class A> struct Same<A, A> { static constexpr bool value = true; };
}  // namespace mck

template <class T>
class KernelMoeCombine {
public:
    __aicore__ inline void Init(GM_ADDR eo, GM_ADDR slot, GM_ADDR w, GM_ADDR y, const optiling::MoeCombineTilingData& td) {
        t_ = td.tokens; d_ = td.hidden; k_ = td.topk; chunk_ = td.chunk;
        begin_ = GetBlockIdx() * td.tokensPerCore;
        end_ = begin_ + td.tokensPerCore < t_ ? begin_ + td.tokensPerCore : t_;
        eoGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(eo), uint64_t(td.rows) * d_);
        slotGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(slot), uint64_t(t_) * k_);
        wGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(w), uint64_t(t_) * k_);
        yGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(y), uint64_t(t_) * d_);
        pipe_.InitBuffer(inQ_, 2, chunk_ * 4);
        pipe_.InitBuffer(f32Buf_, chunk_ * 4);
        pipe_.InitBuffer(accBuf_, chunk_ * 4);
    }

    __aicore__ inline void Process() {
        for (uint32_t t = begin_; t < end_; ++t)
            for (uint32_t c0 = 0; c0 < d_; c0 += chunk_) Chunk(t, c0, d_ - c0 < chunk_ ? d_ - c0 : chunk_);
    }

private:
    __aicore__ inline void Chunk(uint32_t t, uint32_t c0, uint32_t len) {
        LocalTensor<float> acc = accBuf_.Get<float>(), f = f32Buf_.Get<float>();
        SetFlag<HardEvent::MTE3_V>(EVENT_ID0);   // the previous chunk's copy-out of acc is done
        WaitFlag<HardEvent::MTE3_V>(EVENT_ID0);
        Duplicate(acc, 0.0f, len);
        for (uint32_t j = 0; j < k_; ++j) {
            int32_t r = slotGm_.GetValue(uint64_t(t) * k_ + j);
            if (r < 0) continue;
            float w = wGm_.GetValue(uint64_t(t) * k_ + j);
            LocalTensor<T> row = inQ_.AllocTensor<T>();
            DataCopyPad(row, eoGm_[uint64_t(r) * d_ + c0], DataCopyExtParams(1, len * sizeof(T), 0, 0, 0), DataCopyPadExtParams<T>{false, 0, 0, T()});
            inQ_.EnQue(row);
            row = inQ_.DeQue<T>();
            if constexpr (mck::Same<T, float>::value) {
                Axpy(acc, row, w, len);
            } else {
                Cast(f, row, RoundMode::CAST_NONE, len);
                Axpy(acc, f, w, len);
            }
            inQ_.FreeTensor(row);
        }
        SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
        WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
        DataCopyPad(yGm_[uint64_t(t) * d_ + c0], acc, DataCopyExtParams(1, len * 4, 0, 0, 0));
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, 2> inQ_;
    TBuf<TPosition::VECCALC> f32Buf_, accBuf_;
    GlobalTensor<T> eoGm_;
    GlobalTensor<int32_t> slotGm_;
    GlobalTensor<float> wGm_, yGm_;
    uint32_t t_ = 0, d_ = 0, k_ = 0, chunk_ = 0, begin_ = 0, end_ = 0;
};

extern "C" __global__ __aicore__ void moe_combine(GM_ADDR expertOut, GM_ADDR slotOf, GM_ADDR topkWeights, GM_ADDR y,
                                                  GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA(td, tiling);
    if (TILING_KEY_IS(0)) { KernelMoeCombine<float> op; op.Init(expertOut, slotOf, topkWeights, y, td); op.Process(); }
    else if (TILING_KEY_IS(1)) { KernelMoeCombine<bfloat16_t> op; op.Init(expertOut, slotOf, topkWeights, y, td); op.Process(); }
}
