// CPU twin entry of kv_pack_fp8: host tiling + launch of op_kernel/kv_pack_fp8.cpp.
// aot inputs: cache u8 [blocks, P*584], entries [N, 512] f32, slots [N] i32; output: out u8 [blocks, P*584].
// Slots below -1 or beyond the cache are rejected here (the kernel itself would skip them).
#include "kernel_operator.h"
#include "twin/aot.h"
#include "kv_pack_fp8_tiling.h"
#define ASCENDC_TWIN_TILING_TYPE optiling::KvPackFp8TilingData
#include "kv_pack_fp8.cpp"

ASCENDC_TWIN_EXPORTS

ASCENDC_TWIN_API int KvPackFp8Aot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    using namespace kv_pack_fp8_host;
    ascendc_twin::AotArgs a{"kv_pack_fp8", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(4);
        a.Expect(0, "cache", {"uint8"}, 2);
        int64_t blocks = a.Dim(0, 0), row = a.Dim(0, 1);
        if (blocks < 1 || row == 0 || row % kTokenBytes != 0)
            ascendc_twin::BadArg("kv_pack_fp8: cache must be uint8 [blocks >= 1, P * 584], got " + a.ShapeStr(0));
        a.Expect(1, "entries", {"float32"}, 2);
        int64_t n = a.Dim(1, 0);
        if (a.Dim(1, 1) != kDim) ascendc_twin::BadArg("kv_pack_fp8: entries must be [N, 512], got " + a.ShapeStr(1));
        a.Expect(2, "slots", {"int32"}, 1);
        a.ExpectShape(2, "slots", {n});
        a.Expect(3, "out", {"uint8"}, 2);
        a.ExpectShape(3, "out", {blocks, row});
        int64_t capacity = blocks * (row / kTokenBytes);
        const int32_t* slots = a.Ptr<int32_t>(2);
        for (int64_t i = 0; i < n; ++i)
            if (slots[i] < -1 || slots[i] >= capacity)
                ascendc_twin::BadArg("kv_pack_fp8: slots[" + std::to_string(i) + "] = " + std::to_string(slots[i]) +
                                     " is outside -1.." + std::to_string(capacity - 1));
        optiling::KvPackFp8TilingData td;
        const ascendc_twin::SocSpec& soc = ascendc_twin::CurrentSoc();
        if (const char* err = ComputeTiling(static_cast<uint32_t>(n), static_cast<uint32_t>(row / kTokenBytes),
                                            static_cast<uint32_t>(blocks), soc.fp8VectorCast, soc.ubBytes, soc.vectorCores, td))
            ascendc_twin::BadArg(std::string("kv_pack_fp8 tiling: ") + err);
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "kv_pack_fp8";
        spec.blockDim = td.usedCores;
        spec.gm = {a.Region(0, "cache"), a.Region(1, "entries"), a.Region(2, "slots"), a.Region(3, "out")};
        ascendc_twin::Launch(spec, [&] {
            kv_pack_fp8(a.Ptr<uint8_t>(0), a.Ptr<uint8_t>(1), a.Ptr<uint8_t>(2), a.Ptr<uint8_t>(3), nullptr,
                        reinterpret_cast<GM_ADDR>(&td));
        });
    });
}

// Tiling query for tests: out = {blocksPerCore, usedCores, copyChunk, slotTile}.
ASCENDC_TWIN_API int KvPackFp8Tiling(uint32_t entries, uint32_t pageBlock, uint32_t blocks, uint64_t ub, uint32_t cores, uint32_t* out) {
    optiling::KvPackFp8TilingData td;
    if (kv_pack_fp8_host::ComputeTiling(entries, pageBlock, blocks, false, ub, cores, td)) return ascendc_twin::kBadArg;
    out[0] = td.blocksPerCore; out[1] = td.usedCores; out[2] = td.copyChunk; out[3] = td.slotTile;
    return 0;
}
