// sinkhorn_mhc: mHC pre/post weights and the Sinkhorn-normalised n x n residual mixing (V4_SPEC 3).
// mixes [T, (2+n)n] fp32, scale [3], base [(2+n)n] -> pre [T, n], post [T, n], comb [T, n, n].
// Each block owns a contiguous token range and walks it in tiles of tileTokens.  A tile is loaded
// token-major, gathered into column-major rows (one row of tileTokens per mix channel) so that every
// step is a vector instruction over the tile, then gathered back token-major for the output.
#include "kernel_operator.h"
using namespace AscendC;

class KernelSinkhornMhc {
public:
    __aicore__ inline void Init(GM_ADDR mixes, GM_ADDR scale, GM_ADDR base, GM_ADDR pre, GM_ADDR post, GM_ADDR comb,
                                uint32_t total, uint32_t n, uint32_t perCore, uint32_t tile, uint32_t iters, float eps) {
        n_ = n; nn_ = n * n; m_ = (2 + n) * n; tile_ = tile; iters_ = iters; eps_ = eps;
        begin_ = GetBlockIdx() * perCore;
        end_ = begin_ + perCore < total ? begin_ + perCore : total;
        mixGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(mixes), uint64_t(total) * m_);
        scaleGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(scale), 3);
        baseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(base), m_);
        preGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(pre), uint64_t(total) * n);
        postGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(post), uint64_t(total) * n);
        combGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(comb), uint64_t(total) * nn_);

        pipe_.InitBuffer(inQ_, 2, tile * m_ * sizeof(float));
        pipe_.InitBuffer(outQ_, 1, tile * (2 * n + nn_) * sizeof(float));
        pipe_.InitBuffer(soaBuf_, tile * m_ * sizeof(float));
        pipe_.InitBuffer(offInBuf_, tile * m_ * sizeof(uint32_t));
        pipe_.InitBuffer(offNBuf_, tile * n * sizeof(uint32_t));
        pipe_.InitBuffer(offNNBuf_, tile * nn_ * sizeof(uint32_t));
        pipe_.InitBuffer(workBuf_, 2 * tile * sizeof(float));
        pipe_.InitBuffer(paramBuf_, 32 + (m_ * 4 + 31) / 32 * 32);
        LoadParams();
        BuildOffsets();
        SetFlag<HardEvent::S_V>(EVENT_ID0);  // offset tables written by the scalar unit, read by Gather
        WaitFlag<HardEvent::S_V>(EVENT_ID0);
    }

    __aicore__ inline void Process() {
        for (uint32_t t0 = begin_; t0 < end_; t0 += tile_) {
            uint32_t valid = end_ - t0 < tile_ ? end_ - t0 : tile_;
            CopyIn(t0, valid);
            Compute();
            CopyOut(t0, valid);
        }
    }

private:
    __aicore__ inline void LoadParams() {
        LocalTensor<float> p = paramBuf_.Get<float>();
        DataCopyPad(p, scaleGm_, DataCopyExtParams(1, 3 * sizeof(float), 0, 0, 0), DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
        DataCopyPad(p[8], baseGm_, DataCopyExtParams(1, m_ * sizeof(float), 0, 0, 0), DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
        SetFlag<HardEvent::MTE2_S>(EVENT_ID0);
        WaitFlag<HardEvent::MTE2_S>(EVENT_ID0);
        for (uint32_t i = 0; i < 3; ++i) scale_[i] = p.GetValue(i);
        params_ = p[8];
    }

    // Byte offsets: token-major tile -> channel rows, and channel rows -> token-major outputs.
    __aicore__ inline void BuildOffsets() {
        LocalTensor<uint32_t> in = offInBuf_.Get<uint32_t>(), on = offNBuf_.Get<uint32_t>(), onn = offNNBuf_.Get<uint32_t>();
        for (uint32_t c = 0; c < m_; ++c)
            for (uint32_t t = 0; t < tile_; ++t) in.SetValue(c * tile_ + t, (t * m_ + c) * 4);
        for (uint32_t t = 0; t < tile_; ++t) {
            for (uint32_t i = 0; i < n_; ++i) on.SetValue(t * n_ + i, (i * tile_ + t) * 4);
            for (uint32_t c = 0; c < nn_; ++c) onn.SetValue(t * nn_ + c, (c * tile_ + t) * 4);
        }
    }

    __aicore__ inline void CopyIn(uint32_t t0, uint32_t valid) {
        LocalTensor<float> x = inQ_.AllocTensor<float>();
        DataCopyPad(x, mixGm_[uint64_t(t0) * m_], DataCopyExtParams(1, valid * m_ * sizeof(float), 0, 0, 0),
                    DataCopyPadExtParams<float>{true, 0, 0, 0.0f});
        inQ_.EnQue(x);
    }

    __aicore__ inline LocalTensor<float> Row(uint32_t c) { return soaBuf_.Get<float>()[c * tile_]; }

    // row = sigmoid(row * s + b) * mult + add
    __aicore__ inline void Sigmoid(LocalTensor<float> r, float s, float b, float mult, float add) {
        Muls(r, r, -s, tile_);
        Adds(r, r, -b, tile_);
        Exp(r, r, tile_);
        Adds(r, r, 1.0f, tile_);
        Reciprocal(r, r, tile_);
        if (mult != 1.0f) Muls(r, r, mult, tile_);
        if (add != 0.0f) Adds(r, r, add, tile_);
    }

    // element b of line a of C: row a (byRow) or column a
    __aicore__ inline LocalTensor<float> C(bool byRow, uint32_t a, uint32_t b) {
        return Row(2 * n_ + (byRow ? a * n_ + b : b * n_ + a));
    }

    // C[i, j] lives in row 2n + i n + j.  Normalise rows (byRow) or columns by their sums + eps.
    __aicore__ inline void Normalise(bool byRow) {
        LocalTensor<float> acc = workBuf_.Get<float>();
        for (uint32_t a = 0; a < n_; ++a) {
            DataCopy(acc, C(byRow, a, 0), tile_);
            for (uint32_t b = 1; b < n_; ++b) Add(acc, acc, C(byRow, a, b), tile_);
            Adds(acc, acc, eps_, tile_);
            for (uint32_t b = 0; b < n_; ++b) Div(C(byRow, a, b), C(byRow, a, b), acc, tile_);
        }
    }

    __aicore__ inline void Compute() {
        LocalTensor<float> x = inQ_.DeQue<float>();
        LocalTensor<float> soa = soaBuf_.Get<float>();
        Gather(soa, x, offInBuf_.Get<uint32_t>(), 0, tile_ * m_);
        inQ_.FreeTensor(x);

        for (uint32_t i = 0; i < n_; ++i) Sigmoid(Row(i), scale_[0], params_.GetValue(i), 1.0f, eps_);
        for (uint32_t i = 0; i < n_; ++i) Sigmoid(Row(n_ + i), scale_[1], params_.GetValue(n_ + i), 2.0f, 0.0f);
        for (uint32_t c = 0; c < nn_; ++c) {
            Muls(Row(2 * n_ + c), Row(2 * n_ + c), scale_[2], tile_);
            Adds(Row(2 * n_ + c), Row(2 * n_ + c), params_.GetValue(2 * n_ + c), tile_);
        }
        // softmax over each row of C, + eps
        LocalTensor<float> mx = workBuf_.Get<float>()[tile_];
        LocalTensor<float> acc = workBuf_.Get<float>();
        for (uint32_t i = 0; i < n_; ++i) {
            DataCopy(mx, Row(2 * n_ + i * n_), tile_);
            for (uint32_t j = 1; j < n_; ++j) Max(mx, mx, Row(2 * n_ + i * n_ + j), tile_);
            for (uint32_t j = 0; j < n_; ++j) {
                Sub(Row(2 * n_ + i * n_ + j), Row(2 * n_ + i * n_ + j), mx, tile_);
                Exp(Row(2 * n_ + i * n_ + j), Row(2 * n_ + i * n_ + j), tile_);
            }
            DataCopy(acc, Row(2 * n_ + i * n_), tile_);
            for (uint32_t j = 1; j < n_; ++j) Add(acc, acc, Row(2 * n_ + i * n_ + j), tile_);
            for (uint32_t j = 0; j < n_; ++j) {
                Div(Row(2 * n_ + i * n_ + j), Row(2 * n_ + i * n_ + j), acc, tile_);
                Adds(Row(2 * n_ + i * n_ + j), Row(2 * n_ + i * n_ + j), eps_, tile_);
            }
        }
        Normalise(false);
        for (uint32_t it = 1; it < iters_; ++it) {
            Normalise(true);
            Normalise(false);
        }

        LocalTensor<float> y = outQ_.AllocTensor<float>();
        Gather(y, soa, offNBuf_.Get<uint32_t>(), 0, tile_ * n_);
        Gather(y[tile_ * n_], Row(n_), offNBuf_.Get<uint32_t>(), 0, tile_ * n_);
        Gather(y[2 * tile_ * n_], Row(2 * n_), offNNBuf_.Get<uint32_t>(), 0, tile_ * nn_);
        outQ_.EnQue(y);
    }

    __aicore__ inline void CopyOut(uint32_t t0, uint32_t valid) {
        LocalTensor<float> y = outQ_.DeQue<float>();
        DataCopyPad(preGm_[uint64_t(t0) * n_], y, DataCopyExtParams(1, valid * n_ * sizeof(float), 0, 0, 0));
        DataCopyPad(postGm_[uint64_t(t0) * n_], y[tile_ * n_], DataCopyExtParams(1, valid * n_ * sizeof(float), 0, 0, 0));
        DataCopyPad(combGm_[uint64_t(t0) * nn_], y[2 * tile_ * n_], DataCopyExtParams(1, valid * nn_ * sizeof(float), 0, 0, 0));
        outQ_.FreeTensor(y);
    }

    TPipe pipe_;
    TQue<QuePosition::VECIN, 2> inQ_;
    TQue<QuePosition::VECOUT, 1> outQ_;
    TBuf<TPosition::VECCALC> soaBuf_, offInBuf_, offNBuf_, offNNBuf_, workBuf_, paramBuf_;
    GlobalTensor<float> mixGm_, scaleGm_, baseGm_, preGm_, postGm_, combGm_;
    LocalTensor<float> params_;
    float scale_[3] = {0, 0, 0};
    float eps_ = 0;
    uint32_t n_ = 0, nn_ = 0, m_ = 0, tile_ = 0, iters_ = 0, begin_ = 0, end_ = 0;
};

extern "C" __global__ __aicore__ void sinkhorn_mhc(GM_ADDR mixes, GM_ADDR scale, GM_ADDR base, GM_ADDR pre, GM_ADDR post,
                                                   GM_ADDR comb, GM_ADDR workspace, GM_ADDR tiling) {
    (void)workspace;
    GET_TILING_DATA(td, tiling);
    KernelSinkhornMhc op;
    op.Init(mixes, scale, base, pre, post, comb, td.totalTokens, td.hcMult, td.tokensPerCore, td.tileTokens, td.iters, td.eps);
    op.Process();
}
