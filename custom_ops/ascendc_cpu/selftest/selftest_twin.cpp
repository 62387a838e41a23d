// Small kernels that exercise each emulator rule; driven by tests/test_ascendc_emulator.py.
// SelftestAot(mode int32[1], x float32[N], out float32[N]); mode picks the kernel below.
#include "kernel_operator.h"
#include "twin/aot.h"

using namespace AscendC;

namespace {

constexpr int32_t kBlocks = 4;

// Mode 0: each of 4 blocks copies its quarter through a double-buffered queue: out = 2 x + blockIdx.
void CopyScale(GM_ADDR x, GM_ADDR out, uint32_t n) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 2> inQ;
    TQue<QuePosition::VECOUT, 1> outQ;
    uint32_t per = n / kBlocks, tile = 64;
    pipe.InitBuffer(inQ, 2, tile * sizeof(float));
    pipe.InitBuffer(outQ, 1, tile * sizeof(float));
    GlobalTensor<float> xg, og;
    xg.SetGlobalBuffer(reinterpret_cast<float*>(x) + GetBlockIdx() * per, per);
    og.SetGlobalBuffer(reinterpret_cast<float*>(out) + GetBlockIdx() * per, per);
    for (uint32_t t = 0; t < per; t += tile) {
        LocalTensor<float> a = inQ.AllocTensor<float>();
        DataCopy(a, xg[t], tile);
        inQ.EnQue(a);
        LocalTensor<float> b = inQ.DeQue<float>();
        LocalTensor<float> c = outQ.AllocTensor<float>();
        Muls(c, b, 2.0f, tile);
        Adds(c, c, static_cast<float>(GetBlockIdx()), tile);
        outQ.EnQue(c);
        inQ.FreeTensor(b);
        LocalTensor<float> d = outQ.DeQue<float>();
        DataCopy(og[t], d, tile);
        outQ.FreeTensor(d);
    }
}

void Violations(int32_t mode, GM_ADDR x, GM_ADDR out, uint32_t n) {
    TPipe pipe;
    TQue<QuePosition::VECIN, 1> q;
    TBuf<TPosition::VECCALC> buf;
    GlobalTensor<float> xg, og;
    xg.SetGlobalBuffer(reinterpret_cast<float*>(x), n);
    og.SetGlobalBuffer(reinterpret_cast<float*>(out), n);
    if (mode == 1) { pipe.InitBuffer(q, 2, 100 * 1024); return; }             // 200 KiB > UB
    pipe.InitBuffer(q, 1, 1024);
    pipe.InitBuffer(buf, 4096);
    LocalTensor<float> w = buf.Get<float>();
    switch (mode) {
        case 2: DataCopy(w, xg, 5); break;                                    // 20 bytes
        case 3: DataCopy(w[3], xg, 8); break;                                 // UB byte 12
        case 4: { LocalTensor<float> a = q.AllocTensor<float>(); (void)a; break; }
        case 5: { LocalTensor<float> a = q.DeQue<float>(); (void)a; break; }
        case 6: { q.AllocTensor<float>(); q.AllocTensor<float>(); break; }
        case 7: WaitFlag<HardEvent::MTE2_V>(EVENT_ID0); break;
        case 8: { GlobalTensor<float> big; big.SetGlobalBuffer(reinterpret_cast<float*>(x)); DataCopy(w, big[n], 8); break; }
        case 9: Adds(w[1], w[1], 1.0f, 8); break;
        case 19: DataCopyPad(w, xg, DataCopyExtParams(1, 0, 0, 0, 0), DataCopyPadExtParams<float>{}); break;
        case 20: { DataCopy(w, xg, 8); Adds(w, w, 1.0f, 8); break; }                  // RAW MTE2 -> V, no sync
        case 21: { Duplicate(w, 1.0f, 8); PipeBarrier<PIPE_ALL>(); Adds(w[8], w, 1.0f, 8); DataCopy(w, xg, 8); break; }  // WAR V -> MTE2
        case 22: { Duplicate(w, 1.0f, 8); float v = w.GetValue(0); (void)v; break; }     // RAW V -> S
        case 26: { LocalTensor<uint16_t> u = w.ReinterpretCast<uint16_t>(); ShiftLeft(u, u, uint16_t(17), 16); break; }
        case 15: SetFlag<HardEvent::MTE2_V>(EVENT_ID1); break;
        case 16: { LocalTensor<float> a = q.AllocTensor<float>(); q.EnQue(a); break; }
        case 17: { LocalTensor<float> a = q.AllocTensor<float>(); q.FreeTensor(a); q.FreeTensor(a); break; }
        default: break;
    }
}

// Modes 10-14, 18, 23-25: numerics of Cast / DataCopyPad / reductions / Gather / bit operations on one block.
void Numerics(int32_t mode, GM_ADDR x, GM_ADDR out, uint32_t n) {
    TPipe pipe;
    TBuf<TPosition::VECCALC> a, b, c, off;
    uint32_t cap = (n + 7) / 8 * 8;
    pipe.InitBuffer(a, cap * 4);
    pipe.InitBuffer(b, cap * 4);
    pipe.InitBuffer(c, cap * 4);
    pipe.InitBuffer(off, cap * 4);
    GlobalTensor<float> xg, og;
    xg.SetGlobalBuffer(reinterpret_cast<float*>(x), n);
    og.SetGlobalBuffer(reinterpret_cast<float*>(out), n);
    LocalTensor<float> fa = a.Get<float>(), fc = c.Get<float>();
    DataCopyPad(fa, xg, DataCopyExtParams(1, n * 4, 0, 0, 0), DataCopyPadExtParams<float>{true, 0, 0, 0.0f});
    SetFlag<HardEvent::MTE2_V>(EVENT_ID0);
    WaitFlag<HardEvent::MTE2_V>(EVENT_ID0);
    if (mode == 10) {  // float -> fp8 e4m3 -> float
        LocalTensor<fp8_e4m3fn_t> q8 = b.Get<fp8_e4m3fn_t>();
        Cast(q8, fa, RoundMode::CAST_RINT, cap);
        Cast(fc, q8, RoundMode::CAST_NONE, cap);
    } else if (mode == 11) {  // float -> bf16 -> float
        LocalTensor<bfloat16_t> h = b.Get<bfloat16_t>();
        Cast(h, fa, RoundMode::CAST_RINT, cap);
        Cast(fc, h, RoundMode::CAST_NONE, cap);
    } else if (mode == 12) {  // unaligned length through DataCopyPad: x + 1
        Adds(fc, fa, 1.0f, cap);
    } else if (mode == 13) {  // out[0] = sum, out[1] = max
        LocalTensor<float> fb = b.Get<float>();
        Duplicate(fc, 0.0f, cap);
        ReduceSum(fc, fa, fb, n);
        PipeBarrier<PIPE_ALL>();
        float sum = fc.GetValue(0);
        ReduceMax(fc, fa, fb, n);
        SetFlag<HardEvent::V_S>(EVENT_ID0);
        WaitFlag<HardEvent::V_S>(EVENT_ID0);
        fc.SetValue(1, fc.GetValue(0));
        fc.SetValue(0, sum);
    } else if (mode == 14) {  // reversal by Gather
        LocalTensor<uint32_t> o = off.Get<uint32_t>();
        for (uint32_t i = 0; i < n; ++i) o.SetValue(i, (n - 1 - i) * 4);
        SetFlag<HardEvent::S_V>(EVENT_ID0);
        WaitFlag<HardEvent::S_V>(EVENT_ID0);
        Gather(fc, fa, o, 0, n);
    } else if (mode == 18) {  // strided DataCopy: 2 blocks of 32 bytes, skipping one block in GM
        Duplicate(fc, 0.0f, cap);
        SetFlag<HardEvent::V_MTE2>(EVENT_ID0);
        WaitFlag<HardEvent::V_MTE2>(EVENT_ID0);
        DataCopy(fc, xg, DataCopyParams(2, 1, 1, 0));
        PipeBarrier<PIPE_ALL>();
    } else if (mode >= 23 && mode <= 25) {  // x holds 2n 16-bit lanes (n % 16 == 0): halves A | B
        LocalTensor<int16_t> s16 = fa.ReinterpretCast<int16_t>(), d16 = fc.ReinterpretCast<int16_t>();
        LocalTensor<uint16_t> su = fa.ReinterpretCast<uint16_t>(), du = fc.ReinterpretCast<uint16_t>();
        if (mode == 23) { And(du, su, su[n], n); Or(du[n], su, su[n], n); }           // A & B | A | B
        else if (mode == 24) { ShiftLeft(d16, s16, int16_t(3), n); ShiftRight(d16[n], s16[n], int16_t(3), n); }
        else { ShiftLeft(du, su, uint16_t(3), n); ShiftRight(du[n], su[n], uint16_t(3), n); }
    }
    PipeBarrier<PIPE_ALL>();
    DataCopyPad(og, fc, DataCopyExtParams(1, n * 4, 0, 0, 0));
}

}  // namespace

ASCENDC_TWIN_EXPORTS

ASCENDC_TWIN_API int SelftestAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    ascendc_twin::AotArgs a{"selftest", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(3);
        a.Expect(0, "mode", {"int32"}, 1);
        a.Expect(1, "x", {"float32"}, 1);
        a.Expect(2, "out", {"float32"}, 1);
        int32_t mode = a.Ptr<int32_t>(0)[0];
        uint32_t n = static_cast<uint32_t>(a.Numel(1));
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "selftest_mode" + std::to_string(mode);
        spec.blockDim = mode == 0 ? kBlocks : 1;
        spec.gm = {a.Region(1, "x"), a.Region(2, "out")};
        GM_ADDR x = a.Ptr<uint8_t>(1), out = a.Ptr<uint8_t>(2);
        ascendc_twin::Launch(spec, [&] {
            if (mode == 0) CopyScale(x, out, n);
            else if ((mode >= 10 && mode <= 14) || mode == 18 || (mode >= 23 && mode <= 25)) Numerics(mode, x, out, n);
            else Violations(mode, x, out, n);
        });
    });
}
