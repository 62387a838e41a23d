// CPU twin entry of sparse_fp8_decode: host tiling + launch of op_kernel/sparse_fp8_decode.cpp.
// aot inputs: q [B,H,512] f32, cache u8 [N1, P1*584], indices [B,K] i32, extra_cache u8 [N2, P2*584],
// extra_indices [B,K2] i32, attn_sink [H] f32, attrs [1] f32 = (softmax_scale,);
// outputs: out [B,H,512] f32, lse [B,H] f32.
#include "kernel_operator.h"
#include "twin/aot.h"
#include "sparse_fp8_decode_tiling.h"
#define ASCENDC_TWIN_TILING_TYPE optiling::SparseFp8DecodeTilingData
#include "sparse_fp8_decode.cpp"
#include "fp8_scalar.h"

static_assert(sparse_fp8_decode_host::kDecodeScratchTensors == v4k::kE4M3ScratchTensors, "tiling and kernel disagree on the decode scratch");

ASCENDC_TWIN_EXPORTS

ASCENDC_TWIN_API int SparseFp8DecodeAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    using namespace sparse_fp8_decode_host;
    ascendc_twin::AotArgs a{"sparse_fp8_decode", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(9);
        a.Expect(0, "q", {"float32"}, 3);
        int64_t B = a.Dim(0, 0), H = a.Dim(0, 1);
        if (a.Dim(0, 2) != kDim) ascendc_twin::BadArg("sparse_fp8_decode: q must be [B, H, 512], got " + a.ShapeStr(0));
        a.Expect(1, "cache", {"uint8"}, 2);
        a.Expect(3, "extra_cache", {"uint8"}, 2);
        for (int i : {1, 3})
            if (a.Dim(i, 1) % kTokenBytes != 0 || a.Dim(i, 1) == 0)
                ascendc_twin::BadArg("sparse_fp8_decode: caches must be uint8 [blocks, P * 584], got " + a.ShapeStr(i));
        a.Expect(2, "indices", {"int32"}, 2);
        a.Expect(4, "extra_indices", {"int32"}, 2);
        if (a.Dim(2, 0) != B || a.Dim(4, 0) != B) ascendc_twin::BadArg("sparse_fp8_decode: index rows must equal the batch " + std::to_string(B));
        a.Expect(5, "attn_sink", {"float32"}, 1);
        a.ExpectShape(5, "attn_sink", {H});
        a.Expect(6, "attrs", {"float32"}, 1);
        a.ExpectShape(6, "attrs", {1});
        a.Expect(7, "out", {"float32"}, 3);
        a.ExpectShape(7, "out", {B, H, kDim});
        a.Expect(8, "lse", {"float32"}, 2);
        a.ExpectShape(8, "lse", {B, H});
        if (B == 0 || H == 0) return;
        optiling::SparseFp8DecodeTilingData td;
        const ascendc_twin::SocSpec& soc = ascendc_twin::CurrentSoc();
        const char* err = ComputeTiling(static_cast<uint32_t>(B), static_cast<uint32_t>(H), static_cast<uint32_t>(a.Dim(2, 1)),
                                        static_cast<uint32_t>(a.Dim(4, 1)), static_cast<uint32_t>(a.Dim(1, 1) / kTokenBytes),
                                        static_cast<uint32_t>(a.Dim(3, 1) / kTokenBytes), static_cast<uint32_t>(a.Dim(1, 0)),
                                        static_cast<uint32_t>(a.Dim(3, 0)), a.Ptr<float>(6)[0], soc.fp8VectorCast, soc.ubBytes,
                                        soc.vectorCores, td);
        if (err) ascendc_twin::BadArg(std::string("sparse_fp8_decode tiling: ") + err);
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "sparse_fp8_decode";
        spec.blockDim = td.usedCores;
        spec.gm = {a.Region(0, "q"), a.Region(1, "cache"), a.Region(2, "indices"), a.Region(3, "extra_cache"),
                   a.Region(4, "extra_indices"), a.Region(5, "attn_sink"), a.Region(7, "out"), a.Region(8, "lse")};
        ascendc_twin::Launch(spec, [&] {
            sparse_fp8_decode(a.Ptr<uint8_t>(0), a.Ptr<uint8_t>(1), a.Ptr<uint8_t>(2), a.Ptr<uint8_t>(3), a.Ptr<uint8_t>(4),
                              a.Ptr<uint8_t>(5), a.Ptr<uint8_t>(7), a.Ptr<uint8_t>(8), nullptr, reinterpret_cast<GM_ADDR>(&td));
        });
    });
}

// Tiling query for tests: out = {headGroup, groups, tileEntries, usedCores, fp8VectorCast}.
ASCENDC_TWIN_API int SparseFp8DecodeTiling(uint32_t batch, uint32_t heads, uint64_t ub, uint32_t cores, uint32_t fp8Vector,
                                           uint32_t* out) {
    optiling::SparseFp8DecodeTilingData td;
    if (sparse_fp8_decode_host::ComputeTiling(batch, heads, 1, 0, 64, 64, 1, 1, 1.0f, fp8Vector != 0, ub, cores, td))
        return ascendc_twin::kBadArg;
    out[0] = td.headGroup; out[1] = td.groups; out[2] = td.tileEntries; out[3] = td.usedCores; out[4] = td.fp8VectorCast;
    return 0;
}

// Test kernel: every token of a MODEL1 cache -> out [tokens, 512] f32 through sfd::DequantEntry, the routine
// sparse_fp8_decode dequantises with, on the path the current SoC's tiling picks (one block).
namespace {
void DequantAll(GM_ADDR cache, GM_ADDR out, uint64_t blocks, uint32_t page, bool vecCast) {
    using namespace sparse_fp8_decode_host;
    TPipe pipe;
    TBuf<TPosition::VECCALC> rawBuf, rowBuf, decBuf;
    pipe.InitBuffer(rawBuf, kDataBytes + 32);
    pipe.InitBuffer(rowBuf, kDim * 4);
    if (!vecCast) pipe.InitBuffer(decBuf, kDecodeScratchTensors * kNope * 2);
    GlobalTensor<uint8_t> cg;
    GlobalTensor<float> og;
    cg.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(cache), blocks * page * kTokenBytes);
    og.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(out), blocks * page * kDim);
    LocalTensor<uint8_t> raw = rawBuf.Get<uint8_t>();
    LocalTensor<float> row = rowBuf.Get<float>();
    v4k::E4M3Scratch dec;
    if (!vecCast) dec = v4k::E4M3ScratchIn(decBuf.Get<int16_t>(), kNope);
    for (uint64_t t = 0; t < blocks * page; ++t) {
        uint64_t base = t / page * page * kTokenBytes, slot = t % page;
        DataCopy(raw, cg[base + slot * kDataBytes], kDataBytes);
        DataCopyPad(raw[kDataBytes], cg[base + uint64_t(page) * kDataBytes + slot * kScaleBytes],
                    DataCopyExtParams(1, kScaleBytes, 0, 0, 0), DataCopyPadExtParams<uint8_t>{false, 0, 0, 0});
        v4k::Sync<HardEvent::MTE2_S>();
        v4k::Sync<HardEvent::MTE2_V>();
        sfd::DequantEntry(row, raw, raw[kDataBytes], dec, vecCast);
        v4k::Sync<HardEvent::V_MTE3>();
        DataCopy(og[t * kDim], row, kDim);
        v4k::Sync<HardEvent::V_MTE2>();      // the next token's copy-in overwrites what this one's vector ops read
        v4k::Sync<HardEvent::MTE3_V>();      // ... and its decode overwrites what this copy-out reads
    }
}
}  // namespace

// aot inputs: cache u8 [blocks, P*584]; output: out f32 [blocks*P, 512].
ASCENDC_TWIN_API int SparseFp8DecodeDequantAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    using namespace sparse_fp8_decode_host;
    ascendc_twin::AotArgs a{"sparse_fp8_decode_dequant", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(2);
        a.Expect(0, "cache", {"uint8"}, 2);
        if (a.Dim(0, 1) % kTokenBytes != 0 || a.Dim(0, 1) == 0 || a.Dim(0, 0) == 0)
            ascendc_twin::BadArg("sparse_fp8_decode_dequant: cache must be uint8 [blocks >= 1, P * 584], got " + a.ShapeStr(0));
        int64_t blocks = a.Dim(0, 0), page = a.Dim(0, 1) / kTokenBytes;
        a.Expect(1, "out", {"float32"}, 2);
        a.ExpectShape(1, "out", {blocks * page, kDim});
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "sparse_fp8_decode_dequant";
        spec.blockDim = 1;
        spec.gm = {a.Region(0, "cache"), a.Region(1, "out")};
        bool vecCast = ascendc_twin::CurrentSoc().fp8VectorCast;
        ascendc_twin::Launch(spec, [&] {
            DequantAll(a.Ptr<uint8_t>(0), a.Ptr<uint8_t>(1), static_cast<uint64_t>(blocks), static_cast<uint32_t>(page), vecCast);
        });
    });
}
