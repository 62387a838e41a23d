// CPU twin entry of sinkhorn_mhc: host tiling + launch of op_kernel/sinkhorn_mhc.cpp over all blocks.
// aot inputs: mixes [T, (2+n)n] f32, scale [3] f32, base [(2+n)n] f32, attrs [2] f32 = (iters, eps);
// outputs: pre [T, n], post [T, n], comb [T, n, n] f32.
#include "kernel_operator.h"
#include "twin/aot.h"
#include "sinkhorn_mhc_tiling.h"
#define ASCENDC_TWIN_TILING_TYPE optiling::SinkhornMhcTilingData
#include "sinkhorn_mhc.cpp"

ASCENDC_TWIN_EXPORTS

ASCENDC_TWIN_API int SinkhornMhcAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    ascendc_twin::AotArgs a{"sinkhorn_mhc", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(7);
        a.Expect(0, "mixes", {"float32"}, 2);
        int64_t tokens = a.Dim(0, 0), width = a.Dim(0, 1);
        uint32_t n = sinkhorn_mhc_host::HcMultFromWidth(width);
        if (n == 0) ascendc_twin::BadArg("sinkhorn_mhc: mixes width " + std::to_string(width) + " is not (2+n)n for any hc_mult n");
        a.Expect(1, "hc_scale", {"float32"}, 1);
        a.ExpectShape(1, "hc_scale", {3});
        a.Expect(2, "hc_base", {"float32"}, 1);
        a.ExpectShape(2, "hc_base", {width});
        a.Expect(3, "attrs", {"float32"}, 1);
        a.ExpectShape(3, "attrs", {2});
        a.ExpectShape(4, "pre", {tokens, n});
        a.ExpectShape(5, "post", {tokens, n});
        a.ExpectShape(6, "comb", {tokens, n, n});
        for (int i = 4; i < 7; ++i) a.Expect(i, "outputs", {"float32"}, -1);
        float iters = a.Ptr<float>(3)[0], eps = a.Ptr<float>(3)[1];
        if (!(iters >= 1.0f) || iters != static_cast<float>(static_cast<uint32_t>(iters)))
            ascendc_twin::BadArg("sinkhorn_mhc: iters must be a positive integer, got " + std::to_string(iters));
        if (tokens == 0) return;
        optiling::SinkhornMhcTilingData td;
        const ascendc_twin::SocSpec& soc = ascendc_twin::CurrentSoc();
        if (const char* err = sinkhorn_mhc_host::ComputeTiling(tokens, n, static_cast<uint32_t>(iters), eps, soc.ubBytes, soc.vectorCores, td))
            ascendc_twin::BadArg(std::string("sinkhorn_mhc tiling: ") + err);
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "sinkhorn_mhc";
        spec.blockDim = td.usedCores;
        spec.gm = {a.Region(0, "mixes"), a.Region(1, "hc_scale"), a.Region(2, "hc_base"), a.Region(4, "pre"), a.Region(5, "post"), a.Region(6, "comb")};
        ascendc_twin::Launch(spec, [&] {
            sinkhorn_mhc(a.Ptr<uint8_t>(0), a.Ptr<uint8_t>(1), a.Ptr<uint8_t>(2), a.Ptr<uint8_t>(4), a.Ptr<uint8_t>(5), a.Ptr<uint8_t>(6),
                         nullptr, reinterpret_cast<GM_ADDR>(&td));
        });
    });
}

// Tiling query for tests: out = {tokensPerCore, tileTokens, usedCores}; returns 0 or 2 (no tiling).
ASCENDC_TWIN_API int SinkhornMhcTiling(int64_t tokens, uint32_t n, uint64_t ub, uint32_t cores, uint32_t* out) {
    optiling::SinkhornMhcTilingData td;
    if (sinkhorn_mhc_host::ComputeTiling(tokens, n, 1, 1e-6f, ub, cores, td)) return ascendc_twin::kBadArg;
    out[0] = td.tokensPerCore; out[1] = td.tileTokens; out[2] = td.usedCores;
    return 0;
}
