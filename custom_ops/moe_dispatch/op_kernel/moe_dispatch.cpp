// moe_dispatch: group token rows by expert for expert parallelism (V4_SPEC 5; DeepEP-style layout).
// x [T, D] f32/bf16, topk_idx [T, k] i32 (-1 = dropped), topk_weights [T, k] f32 ->
//   recv_x [T*k, D] (x dtype, or e4m3 codes u8 with FP8), recv_scale [T*k, ceil(D/128)] u8 ue8m0,
//   recv_weights [T*k] f32, recv_token [T*k] i32 (-1 = unused row), slot_of [T, k] i32 (row of (t, j)),
//   expert_counts [E] i32, expert_offsets [E+1] i32, rank_counts [ep] i32 (rows per rank),
//   rank_token_counts [ep] i32 (distinct tokens per rank).
// Rows are expert-major, stable in (token, slot) order.  Experts are owned by ranks in contiguous blocks of
// E / ep, so rank r's rows are the contiguous range expert_offsets[r E/ep] .. expert_offsets[(r+1) E/ep].
// Every block counts all routes (scalar pass) to find where its token range starts inside each expert.
#include "kernel_operator.h"
#include "fp8_scalar.h"
using namespace AscendC;

namespace mdk {
template <bool C, class A, class B> struct Select { using type = A; };
template <class A, class B> struct Select<false, A, B> { using type = B; };
template <class A, class B> struct Same { static constexpr bool value = false; };
template <class A> struct Same<A, A> { static constexpr bool value = true; };

using v4k::Bits;
using v4k::FromBits;
using v4k::CeilLog2;
using v4k::EncodeE4M3;
using v4k::Sync;
}  // namespace mdk

template <class T, bool FP8>
class KernelMoeDispatch {
    using OutT = typename mdk::Select<FP8, uint8_t, T>::type;

public:
    __aicore__ inline void Init(GM_ADDR* g, const optiling::MoeDispatchTilingData& td) {
        t_ = td.tokens; d_ = td.hidden; k_ = td.topk; e_ = td.experts; ep_ = td.epSize; chunk_ = td.chunk;
        s_ = td.scaleCols; vecCast_ = td.fp8VectorCast != 0;
        n_ = t_ * k_;
        begin_ = GetBlockIdx() * td.tokensPerCore;
        end_ = begin_ + td.tokensPerCore < t_ ? begin_ + td.tokensPerCore : t_;
        xGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(g[0]), uint64_t(t_) * d_);
        idxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[1]), n_);
        wGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(g[2]), n_);
        recvXGm_.SetGlobalBuffer(reinterpret_cast<__gm__ OutT*>(g[3]), uint64_t(n_) * d_);
        recvScaleGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(g[4]), uint64_t(n_) * s_);
        recvWGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(g[5]), n_);
        recvTokGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[6]), n_);
        slotGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[7]), n_);
        countsGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[8]), e_);
        offsetsGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[9]), e_ + 1);
        rankCountsGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[10]), ep_);
        rankTokensGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(g[11]), ep_);

        pipe_.InitBuffer(inQ_, 1, chunk_ * 4);
        pipe_.InitBuffer(f32Buf_, chunk_ * 4);
        pipe_.InitBuffer(absBuf_, chunk_ * 4);
        pipe_.InitBuffer(codeBuf_, chunk_);
        pipe_.InitBuffer(scaleBuf_, s_);
        pipe_.InitBuffer(redBuf_, 32);
        pipe_.InitBuffer(countBuf_, (e_ + 1) * 4);
        pipe_.InitBuffer(cursorBuf_, (e_ + 1) * 4);
        pipe_.InitBuffer(rankBuf_, ep_ * 4);
        pipe_.InitBuffer(workBuf_, 256);
    }

    __aicore__ inline void Process() {
        Plan();
        for (uint32_t t = begin_; t < end_; ++t) Token(t);
        if (GetBlockIdx() == 0) {
            WriteLayout();
            FillUnusedRows();
        }
    }

private:
    __aicore__ inline bool Valid(int32_t e) const { return e >= 0 && static_cast<uint32_t>(e) < e_; }

    // counts[e] over all routes; cursor[e] = first row of this block's routes inside expert e
    __aicore__ inline void Plan() {
        LocalTensor<int32_t> cnt = countBuf_.Get<int32_t>(), cur = cursorBuf_.Get<int32_t>();
        for (uint32_t e = 0; e <= e_; ++e) { cnt.SetValue(e, 0); cur.SetValue(e, 0); }
        for (uint32_t i = 0; i < n_; ++i) {
            int32_t e = idxGm_.GetValue(i);
            if (!Valid(e)) continue;
            cnt.SetValue(e, cnt.GetValue(e) + 1);
            if (i < begin_ * k_) cur.SetValue(e, cur.GetValue(e) + 1);
        }
        int32_t off = 0;
        for (uint32_t e = 0; e < e_; ++e) {
            cur.SetValue(e, cur.GetValue(e) + off);
            off += cnt.GetValue(e);
        }
        valid_ = off;
    }

    __aicore__ inline void Token(uint32_t t) {
        LocalTensor<int32_t> cur = cursorBuf_.Get<int32_t>();
        int32_t rows[16];
        uint32_t kv = k_ < 16 ? k_ : 16;
        for (uint32_t j = 0; j < k_; ++j) {
            int32_t e = idxGm_.GetValue(uint64_t(t) * k_ + j), r = -1;
            if (Valid(e)) {
                r = cur.GetValue(e);
                cur.SetValue(e, r + 1);
                recvTokGm_.SetValue(r, static_cast<int32_t>(t));
                recvWGm_.SetValue(r, wGm_.GetValue(uint64_t(t) * k_ + j));
            }
            slotGm_.SetValue(uint64_t(t) * k_ + j, r);
            if (j < kv) rows[j] = r;
        }
        LocalTensor<uint8_t> sc = scaleBuf_.Get<uint8_t>();
        mdk::Sync<HardEvent::MTE3_S>();                       // previous token's scale copy-out is done
        if (!FP8) for (uint32_t c = 0; c < s_; ++c) sc.SetValue(c, 127);
        for (uint32_t c0 = 0; c0 < d_; c0 += chunk_) {
            uint32_t len = d_ - c0 < chunk_ ? d_ - c0 : chunk_;
            LocalTensor<T> in = inQ_.AllocTensor<T>();
            DataCopyPad(in, xGm_[uint64_t(t) * d_ + c0], DataCopyExtParams(1, len * sizeof(T), 0, 0, 0), DataCopyPadExtParams<T>{false, 0, 0, T()});
            inQ_.EnQue(in);
            in = inQ_.DeQue<T>();
            if constexpr (FP8) {
                LocalTensor<uint8_t> codes = Quantise(in, len, c0 / 128);
                if (vecCast_) mdk::Sync<HardEvent::V_MTE3>(); else mdk::Sync<HardEvent::S_MTE3>();
                for (uint32_t j = 0; j < kv; ++j)
                    if (rows[j] >= 0)
                        DataCopyPad(recvXGm_[uint64_t(rows[j]) * d_ + c0], codes, DataCopyExtParams(1, len, 0, 0, 0));
            } else {
                mdk::Sync<HardEvent::MTE2_MTE3>();                // copy the row straight back out
                for (uint32_t j = 0; j < kv; ++j)
                    if (rows[j] >= 0)
                        DataCopyPad(recvXGm_[uint64_t(rows[j]) * d_ + c0], in, DataCopyExtParams(1, len * sizeof(T), 0, 0, 0));
                mdk::Sync<HardEvent::MTE3_MTE2>();                // before the next copy-in reuses the buffer
            }
            inQ_.FreeTensor(in);
        }
        mdk::Sync<HardEvent::S_MTE3>();
        for (uint32_t j = 0; j < kv; ++j)
            if (rows[j] >= 0) DataCopyPad(recvScaleGm_[uint64_t(rows[j]) * s_], sc, DataCopyExtParams(1, s_, 0, 0, 0));
    }

    // 1x128 tiles: s = 2^ceil(log2(max(amax, 1e-4) / 448)), codes = e4m3(x / s); scale byte = log2(s) + 127
    __aicore__ inline LocalTensor<uint8_t> Quantise(const LocalTensor<T>& in, uint32_t len, uint32_t col0) {
        LocalTensor<float> f = f32Buf_.Get<float>(), ab = absBuf_.Get<float>(), red = redBuf_.Get<float>(), work = workBuf_.Get<float>();
        LocalTensor<uint8_t> codes = codeBuf_.Get<uint8_t>(), sc = scaleBuf_.Get<uint8_t>();
        if constexpr (mdk::Same<T, float>::value) DataCopy(f, in, (len + 7) / 8 * 8);
        else Cast(f, in, RoundMode::CAST_NONE, len);
        for (uint32_t q = 0; q * 128 < len; ++q) {
            uint32_t tl = len - q * 128 < 128 ? len - q * 128 : 128;
            Abs(ab, f[q * 128], tl);
            ReduceMax(red, ab, work, tl);
            mdk::Sync<HardEvent::V_S>();
            float amax = red.GetValue(0) > 1e-4f ? red.GetValue(0) : 1e-4f;
            int32_t e = mdk::CeilLog2(amax / 448.0f);
            sc.SetValue(col0 + q, static_cast<uint8_t>(e + 127));
            Muls(f[q * 128], f[q * 128], mdk::FromBits(static_cast<uint32_t>(127 - e) << 23), tl);
        }
        if (vecCast_) {
            mdk::Sync<HardEvent::MTE3_V>();                       // previous chunk's codes copied out
            Cast(codes.ReinterpretCast<fp8_e4m3fn_t>(), f, RoundMode::CAST_RINT, len);
        } else {
            mdk::Sync<HardEvent::V_S>();
            mdk::Sync<HardEvent::MTE3_S>();
            for (uint32_t i = 0; i < len; ++i) codes.SetValue(i, mdk::EncodeE4M3(f.GetValue(i)));
        }
        return codes;
    }

    __aicore__ inline void WriteLayout() {
        LocalTensor<int32_t> cnt = countBuf_.Get<int32_t>(), seen = rankBuf_.Get<int32_t>();
        uint32_t per = e_ / ep_;
        int32_t off = 0;
        for (uint32_t e = 0; e < e_; ++e) {
            offsetsGm_.SetValue(e, off);
            countsGm_.SetValue(e, cnt.GetValue(e));
            off += cnt.GetValue(e);
        }
        offsetsGm_.SetValue(e_, off);
        for (uint32_t r = 0; r < ep_; ++r) {
            int32_t rows = 0;
            for (uint32_t e = r * per; e < (r + 1) * per; ++e) rows += cnt.GetValue(e);
            rankCountsGm_.SetValue(r, rows);
            seen.SetValue(r, 0);
        }
        for (uint32_t t = 0; t < t_; ++t) {          // distinct tokens per destination rank
            for (uint32_t j = 0; j < k_; ++j) {
                int32_t e = idxGm_.GetValue(uint64_t(t) * k_ + j);
                if (!Valid(e)) continue;
                bool dup = false;
                for (uint32_t i = 0; i < j; ++i) {
                    int32_t e2 = idxGm_.GetValue(uint64_t(t) * k_ + i);
                    dup = dup || (Valid(e2) && static_cast<uint32_t>(e2) / per == static_cast<uint32_t>(e) / per);
                }
                if (!dup) seen.SetValue(e / per, seen.GetValue(e / per) + 1);
            }
        }
        for (uint32_t r = 0; r < ep_; ++r) rankTokensGm_.SetValue(r, seen.GetValue(r));
    }

    __aicore__ inline void FillUnusedRows() {
        LocalTensor<float> z = f32Buf_.Get<float>();
        LocalTensor<uint8_t> sc = scaleBuf_.Get<uint8_t>();
        Duplicate(z, 0.0f, chunk_);
        mdk::Sync<HardEvent::MTE3_S>();
        for (uint32_t c = 0; c < s_; ++c) sc.SetValue(c, 127);
        mdk::Sync<HardEvent::V_MTE3>();
        mdk::Sync<HardEvent::S_MTE3>();
        LocalTensor<OutT> zo = z.template ReinterpretCast<OutT>();
        for (uint32_t r = valid_; r < n_; ++r) {
            recvTokGm_.SetValue(r, -1);
            recvWGm_.SetValue(r, 0.0f);
            for (uint32_t c0 = 0; c0 < d_; c0 += chunk_) {
                uint32_t len = d_ - c0 < chunk_ ? d_ - c0 : chunk_;
                DataCopyPad(recvXGm_[uint64_t(r) * d_ + c0], zo, DataCopyExtParams(1, len * sizeof(OutT), 0, 0, 0));
            }
            DataCopyPad(recvScaleGm_[uint64_t(r) * s_], sc, DataCopyExtParams(1, s_, 0, 0, 0));
        }
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, 1> inQ_;
    TBuf<TPosition::VECCALC> f32Buf_, absBuf_, codeBuf_, scaleBuf_, redBuf_, countBuf_, cursorBuf_, rankBuf_, workBuf_;
    GlobalTensor<T> xGm_;
    GlobalTensor<OutT> recvXGm_;
    GlobalTensor<int32_t> idxGm_, recvTokGm_, slotGm_, countsGm_, offsetsGm_, rankCountsGm_, rankTokensGm_;
    GlobalTensor<float> wGm_, recvWGm_;
    GlobalTensor<uint8_t> recvScaleGm_;
    uint32_t t_ = 0, d_ = 0, k_ = 0, e_ = 0, ep_ = 0, n_ = 0, chunk_ = 0, s_ = 0, begin_ = 0, end_ = 0;
    int32_t valid_ = 0;
    bool vecCast_ = false;
};

template <class T, bool FP8>
__aicore__ inline void RunMoeDispatch(GM_ADDR* g, const optiling::MoeDispatchTilingData& td) {
    KernelMoeDispatch<T, FP8> op;
    op.Init(g, td);
    op.Process();
}

extern "C" __global__ __aicore__ void moe_dispatch(GM_ADDR x, GM_ADDR topkIdx, GM_ADDR topkWeights, GM_ADDR recvX,
                                                   GM_ADDR recvScale, GM_ADDR recvWeights, GM_ADDR recvToken, GM_ADDR slotOf,
                                                   GM_ADDR expertCounts, GM_ADDR expertOffsets, GM_ADDR rankCounts,
                                                   GM_ADDR rankTokenCounts, GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA(td, tiling);
    GM_ADDR g[12] = {x, topkIdx, topkWeights, recvX, recvScale, recvWeights, recvToken, slotOf, expertCounts, expertOffsets, rankCounts, rankTokenCounts};
    if (TILING_KEY_IS(0)) RunMoeDispatch<float, false>(g, td);
    else if (TILING_KEY_IS(1)) RunMoeDispatch<bfloat16_t, false>(g, td);
    else if (TILING_KEY_IS(2)) RunMoeDispatch<float, true>(g, td);
    else if (TILING_KEY_IS(3)) RunMoeDispatch<bfloat16_t, true>(g, td);
}
