// sparse_fp8_decode: decode attention over selected entries of a paged FP8 (MODEL1) KV cache.
// q [B, H, 512] f32; cache / extra_cache uint8 [blocks, P * 584]; indices [B, K] / extra_indices [B, K2]
// int32 (-1 = skip); attn_sink [H] f32 -> out [B, H, 512] f32, lse [B, H] f32 (V4_SPEC 4 and 8).
// Work item = (batch row, head group).  Selected entries are loaded in tiles (data row by DataCopy,
// 8-byte scale group by DataCopyPad), dequantised on the vector unit and folded into an online softmax
// per head.  The sink only enlarges the denominator.
// Dequantisation (sfd::DequantEntry), chosen by the tiling flag fp8VectorCast:
//   1 (950): Cast fp8_e4m3fn -> float on the vector unit;
//   0 (910B / 910C, no fp8 in the vector unit): software decode with 16-bit integer instructions
//     (common/op_kernel/fp8_decode.h), bit-identical to the Cast.
// Then each 64-dim tile times its ue8m0 scale 2^(s-127), a power of two built exactly as an fp32 (Muls:
// exact unless the product leaves the fp32 normal range, identically on both paths); the bf16 RoPE part
// by Cast.
#include "kernel_operator.h"
#include "fp8_decode.h"
using namespace AscendC;

namespace sfd {
constexpr float kNoScore = -3.0e38f;  // running max before any entry (exp(kNoScore - x) == 0)
constexpr uint32_t kDim = 512, kNope = 448, kRope = 64, kTile = 64, kData = 576, kScaleGroup = 8, kToken = 584;

// ue8m0 code -> 2^(code - 127) as fp32 bits: code << 23 for 1..254; 0 -> 2^-127 (the subnormal 0x00400000);
// 255 -> NaN (the e8m0 NaN code).  The encoder writes 105..247 only (amax >= 1e-4, amax < 2^128).
__aicore__ inline float Ue8m0(uint8_t code) {
    union { uint32_t u; float f; } x;
    x.u = code == 0 ? 0x00400000u : code == 255 ? 0x7fc00000u : static_cast<uint32_t>(code) << 23;
    return x.f;
}

// One MODEL1 entry -> row [512] f32: data = its 576-byte data row in UB, scales = its 8-byte scale group
// in UB (read by the scalar unit: the caller orders MTE2 before S and V).
__aicore__ inline void DequantEntry(const LocalTensor<float>& row, const LocalTensor<uint8_t>& data,
                                    const LocalTensor<uint8_t>& scales, const v4k::E4M3Scratch& scratch, bool vecCast) {
    if (vecCast) Cast(row, data.ReinterpretCast<fp8_e4m3fn_t>(), RoundMode::CAST_NONE, kNope);
    else v4k::DecodeE4M3(row, data, scratch, kNope);
    for (uint32_t c = 0; c < kNope / kTile; ++c)
        Muls(row[c * kTile], row[c * kTile], Ue8m0(scales.GetValue(c)), kTile);
    Cast(row[kNope], data[kNope].ReinterpretCast<bfloat16_t>(), RoundMode::CAST_NONE, kRope);
}
}  // namespace sfd

class KernelSparseFp8Decode {
public:
    __aicore__ inline void Init(GM_ADDR q, GM_ADDR cache, GM_ADDR indices, GM_ADDR extraCache, GM_ADDR extraIndices,
                                GM_ADDR sink, GM_ADDR out, GM_ADDR lse, const uint32_t* f, float scale,
                                uint64_t cacheBlocks, uint64_t extraBlocks, bool vecCast) {
        b_ = f[0]; h_ = f[1]; g_ = f[2]; groups_ = f[3]; k_ = f[4]; k2_ = f[5]; p_ = f[6]; p2_ = f[7]; tile_ = f[8];
        vecCast_ = vecCast;
        scale_ = scale;
        qGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(q), uint64_t(b_) * h_ * sfd::kDim);
        cacheGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(cache), cacheBlocks * p_ * sfd::kToken);
        idxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(indices), uint64_t(b_) * k_);
        if (k2_ > 0) {
            extraGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(extraCache), extraBlocks * p2_ * sfd::kToken);
            extraIdxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int32_t*>(extraIndices), uint64_t(b_) * k2_);
        }
        sinkGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(sink), h_);
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out), uint64_t(b_) * h_ * sfd::kDim);
        lseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(lse), uint64_t(b_) * h_);

        uint32_t g8 = (g_ + 7) / 8 * 8;
        pipe_.InitBuffer(rawQ_, 2, tile_ * (sfd::kData + 32));
        pipe_.InitBuffer(kBuf_, tile_ * sfd::kDim * 4);
        if (!vecCast_) pipe_.InitBuffer(decBuf_, v4k::kE4M3ScratchTensors * sfd::kNope * 2);
        pipe_.InitBuffer(tmpBuf_, sfd::kDim * 4);
        pipe_.InitBuffer(workBuf_, 256);
        pipe_.InitBuffer(redBuf_, 32);
        pipe_.InitBuffer(idsBuf_, tile_ * 4);
        pipe_.InitBuffer(stageBuf_, tile_ * 8 * 4);
        pipe_.InitBuffer(strideBuf_, tile_ * 4);
        pipe_.InitBuffer(qBuf_, g_ * sfd::kDim * 4);
        pipe_.InitBuffer(accBuf_, g_ * sfd::kDim * 4);
        pipe_.InitBuffer(scoreBuf_, g_ * tile_ * 4);
        pipe_.InitBuffer(mBuf_, g8 * 4);
        pipe_.InitBuffer(lBuf_, g8 * 4);
        pipe_.InitBuffer(lseBuf_, g8 * 4);
        if (!vecCast_) dec_ = v4k::E4M3ScratchIn(decBuf_.Get<int16_t>(), sfd::kNope);
        LocalTensor<uint32_t> so = strideBuf_.Get<uint32_t>();
        for (uint32_t e = 0; e < tile_; ++e) so.SetValue(e, e * 8 * 4);
        SetFlag<HardEvent::S_V>(EVENT_ID0);   // score-slot offsets written by the scalar unit, read by Gather
        WaitFlag<HardEvent::S_V>(EVENT_ID0);
    }

    __aicore__ inline void Process() {
        uint32_t items = b_ * groups_;
        for (uint32_t w = GetBlockIdx(); w < items; w += GetBlockNum()) {
            uint32_t b = w / groups_, h0 = (w % groups_) * g_;
            uint32_t gv = h0 + g_ <= h_ ? g_ : h_ - h0;
            Item(b, h0, gv);
        }
    }

private:
    // a scalar through the vector unit (no transcendental scalar instructions): exp or ln
    __aicore__ inline float VecScalar(float x, bool ln) {
        LocalTensor<float> r = redBuf_.Get<float>();
        Duplicate(r, x, 8);
        if (ln) Ln(r, r, 8); else Exp(r, r, 8);
        SetFlag<HardEvent::V_S>(EVENT_ID0);
        WaitFlag<HardEvent::V_S>(EVENT_ID0);
        return r.GetValue(0);
    }

    __aicore__ inline void Item(uint32_t b, uint32_t h0, uint32_t gv) {
        LocalTensor<float> qL = qBuf_.Get<float>(), acc = accBuf_.Get<float>();
        LocalTensor<float> mL = mBuf_.Get<float>(), lL = lBuf_.Get<float>();
        SetFlag<HardEvent::V_MTE2>(EVENT_ID0);   // the previous item's vector reads of q are done
        WaitFlag<HardEvent::V_MTE2>(EVENT_ID0);
        SetFlag<HardEvent::MTE3_V>(EVENT_ID0);   // ... and its copy-out of the accumulator
        WaitFlag<HardEvent::MTE3_V>(EVENT_ID0);
        DataCopy(qL, qGm_[(uint64_t(b) * h_ + h0) * sfd::kDim], gv * sfd::kDim);
        Duplicate(acc, 0.0f, gv * sfd::kDim);
        for (uint32_t i = 0; i < gv; ++i) { mL.SetValue(i, sfd::kNoScore); lL.SetValue(i, 0.0f); }
        SetFlag<HardEvent::MTE2_V>(EVENT_ID0);
        WaitFlag<HardEvent::MTE2_V>(EVENT_ID0);
        Source(cacheGm_, idxGm_, k_, p_, b, gv);
        if (k2_ > 0) Source(extraGm_, extraIdxGm_, k2_, p2_, b, gv);
        Finish(b, h0, gv);
    }

    // Walk one index row, batching valid entries into tiles.
    __aicore__ inline void Source(const GlobalTensor<uint8_t>& cache, const GlobalTensor<int32_t>& idx, uint32_t k,
                                  uint32_t page, uint32_t b, uint32_t gv) {
        LocalTensor<int32_t> ids = idsBuf_.Get<int32_t>();
        uint32_t n = 0;
        for (uint32_t j = 0; j < k; ++j) {
            int32_t t = idx.GetValue(uint64_t(b) * k + j);
            if (t < 0) continue;
            ids.SetValue(n++, t);
            if (n == tile_) { Tile(cache, page, n, gv); n = 0; }
        }
        if (n > 0) Tile(cache, page, n, gv);
    }

    __aicore__ inline void Tile(const GlobalTensor<uint8_t>& cache, uint32_t page, uint32_t n, uint32_t gv) {
        LocalTensor<int32_t> ids = idsBuf_.Get<int32_t>();
        LocalTensor<uint8_t> raw = rawQ_.AllocTensor<uint8_t>();
        for (uint32_t e = 0; e < n; ++e) {
            uint64_t t = static_cast<uint64_t>(ids.GetValue(e)), blk = t / page, slot = t % page;
            uint64_t base = blk * page * sfd::kToken;
            DataCopy(raw[e * sfd::kData], cache[base + slot * sfd::kData], sfd::kData);
            DataCopyPad(raw[tile_ * sfd::kData + e * 32], cache[base + uint64_t(page) * sfd::kData + slot * sfd::kScaleGroup],
                        DataCopyExtParams(1, sfd::kScaleGroup, 0, 0, 0), DataCopyPadExtParams<uint8_t>{false, 0, 0, 0});
        }
        SetFlag<HardEvent::MTE2_S>(EVENT_ID0);   // the scalar unit reads the scale bytes
        WaitFlag<HardEvent::MTE2_S>(EVENT_ID0);
        rawQ_.EnQue(raw);
        raw = rawQ_.DeQue<uint8_t>();
        Dequant(raw, n);
        rawQ_.FreeTensor(raw);
        Scores(n, gv);
    }

    __aicore__ inline void Dequant(const LocalTensor<uint8_t>& raw, uint32_t n) {
        LocalTensor<float> kL = kBuf_.Get<float>();
        for (uint32_t e = 0; e < n; ++e)
            sfd::DequantEntry(kL[e * sfd::kDim], raw[e * sfd::kData], raw[tile_ * sfd::kData + e * 32], dec_, vecCast_);
    }

    __aicore__ inline void Scores(uint32_t n, uint32_t gv) {
        LocalTensor<float> qL = qBuf_.Get<float>(), kL = kBuf_.Get<float>(), acc = accBuf_.Get<float>();
        LocalTensor<float> tmp = tmpBuf_.Get<float>(), work = workBuf_.Get<float>(), red = redBuf_.Get<float>();
        LocalTensor<float> mL = mBuf_.Get<float>(), lL = lBuf_.Get<float>(), stage = stageBuf_.Get<float>();
        LocalTensor<uint32_t> strideOff = strideBuf_.Get<uint32_t>();
        for (uint32_t hl = 0; hl < gv; ++hl) {
            LocalTensor<float> sc = scoreBuf_.Get<float>()[hl * tile_];
            for (uint32_t e = 0; e < n; ++e) {
                Mul(tmp, qL[hl * sfd::kDim], kL[e * sfd::kDim], sfd::kDim);
                ReduceSum(stage[e * 8], tmp, work, sfd::kDim);         // q.k in slot e*8 (aligned)
            }
            Gather(sc, stage, strideOff, 0, n);                        // slots -> contiguous scores
            Muls(sc, sc, scale_, n);
            ReduceMax(red, sc, work, n);
            SetFlag<HardEvent::V_S>(EVENT_ID0);
            WaitFlag<HardEvent::V_S>(EVENT_ID0);
            float mOld = mL.GetValue(hl), mNew = red.GetValue(0) > mOld ? red.GetValue(0) : mOld;
            float alpha = VecScalar(mOld - mNew, false);
            Adds(sc, sc, -mNew, n);
            Exp(sc, sc, n);
            ReduceSum(red, sc, work, n);
            SetFlag<HardEvent::V_S>(EVENT_ID0);
            WaitFlag<HardEvent::V_S>(EVENT_ID0);
            lL.SetValue(hl, lL.GetValue(hl) * alpha + red.GetValue(0));
            mL.SetValue(hl, mNew);
            LocalTensor<float> a = acc[hl * sfd::kDim];
            Muls(a, a, alpha, sfd::kDim);
            for (uint32_t e = 0; e < n; ++e) Axpy(a, kL[e * sfd::kDim], sc.GetValue(e), sfd::kDim);
        }
    }

    // out = acc e^(m-M) / (l e^(m-M) + e^(sink-M)), M = max(m, sink); lse = M + ln(denominator)
    __aicore__ inline void Finish(uint32_t b, uint32_t h0, uint32_t gv) {
        LocalTensor<float> acc = accBuf_.Get<float>(), mL = mBuf_.Get<float>(), lL = lBuf_.Get<float>();
        LocalTensor<float> lseL = lseBuf_.Get<float>();
        SetFlag<HardEvent::MTE3_S>(EVENT_ID0);   // the previous item's lse copy-out is done
        WaitFlag<HardEvent::MTE3_S>(EVENT_ID0);
        for (uint32_t hl = 0; hl < gv; ++hl) {
            float m = mL.GetValue(hl), sink = sinkGm_.GetValue(h0 + hl);
            float big = m > sink ? m : sink;
            float a = VecScalar(m - big, false), s = VecScalar(sink - big, false);
            float denom = lL.GetValue(hl) * a + s;
            Muls(acc[hl * sfd::kDim], acc[hl * sfd::kDim], a / denom, sfd::kDim);
            lseL.SetValue(hl, big + VecScalar(denom, true));
        }
        SetFlag<HardEvent::V_MTE3>(EVENT_ID0);
        WaitFlag<HardEvent::V_MTE3>(EVENT_ID0);
        SetFlag<HardEvent::S_MTE3>(EVENT_ID0);
        WaitFlag<HardEvent::S_MTE3>(EVENT_ID0);
        DataCopy(outGm_[(uint64_t(b) * h_ + h0) * sfd::kDim], acc, gv * sfd::kDim);
        DataCopyPad(lseGm_[uint64_t(b) * h_ + h0], lseL, DataCopyExtParams(1, gv * 4, 0, 0, 0));
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, 1> rawQ_;
    TBuf<TPosition::VECCALC> kBuf_, decBuf_, tmpBuf_, workBuf_, redBuf_, idsBuf_, stageBuf_, strideBuf_;
    TBuf<TPosition::VECCALC> qBuf_, accBuf_, scoreBuf_, mBuf_, lBuf_, lseBuf_;
    GlobalTensor<float> qGm_, sinkGm_, outGm_, lseGm_;
    GlobalTensor<uint8_t> cacheGm_, extraGm_;
    GlobalTensor<int32_t> idxGm_, extraIdxGm_;
    v4k::E4M3Scratch dec_;
    float scale_ = 0;
    bool vecCast_ = false;
    uint32_t b_ = 0, h_ = 0, g_ = 0, groups_ = 0, k_ = 0, k2_ = 0, p_ = 0, p2_ = 0, tile_ = 0;
};

extern "C" __global__ __aicore__ void sparse_fp8_decode(GM_ADDR q, GM_ADDR cache, GM_ADDR indices, GM_ADDR extraCache,
                                                        GM_ADDR extraIndices, GM_ADDR sink, GM_ADDR out, GM_ADDR lse,
                                                        GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA(td, tiling);
    uint32_t f[9] = {td.batch, td.heads, td.headGroup, td.groups, td.topk, td.extraTopk, td.pageBlock, td.extraPageBlock, td.tileEntries};
    KernelSparseFp8Decode op;
    op.Init(q, cache, indices, extraCache, extraIndices, sink, out, lse, f, td.softmaxScale, td.cacheBlocks, td.extraBlocks,
            td.fp8VectorCast != 0);
    op.Process();
}
