// CPU twin entry of sparse_fp8_decode: host tiling + launch of op_kernel/sparse_fp8_decode.cpp.
// aot inputs: q [B,H,512] f32, cache u8 [N1, P1*584], indices [B,K] i32, extra_cache u8 [N2, P2*584],
// extra_indices [B,K2] i32, attn_sink [H] f32, attrs [1] f32 = (softmax_scale,);
// outputs: out [B,H,512] f32, lse [B,H] f32.
#include "kernel_operator.h"
#include "twin/aot.h"
#include "sparse_fp8_decode_tiling.h"
#define ASCENDC_TWIN_TILING_TYPE optiling::SparseFp8DecodeTilingData
#include "sparse_fp8_decode.cpp"

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
                                        static_cast<uint32_t>(a.Dim(3, 0)), a.Ptr<float>(6)[0], soc.ubBytes, soc.vectorCores, td);
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

// Tiling query for tests: out = {headGroup, groups, tileEntries, usedCores}.
ASCENDC_TWIN_API int SparseFp8DecodeTiling(uint32_t batch, uint32_t heads, uint64_t ub, uint32_t cores, uint32_t* out) {
    optiling::SparseFp8DecodeTilingData td;
    if (sparse_fp8_decode_host::ComputeTiling(batch, heads, 1, 0, 64, 64, 1, 1, 1.0f, ub, cores, td)) return ascendc_twin::kBadArg;
    out[0] = td.headGroup; out[1] = td.groups; out[2] = td.tileEntries; out[3] = td.usedCores;
    return 0;
}
