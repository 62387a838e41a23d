// CPU twin entry of moe_combine.  aot inputs: expert_out [N,D] f32/bf16, slot_of [T,k] i32,
// topk_weights [T,k] f32; output y [T,D] f32.
#include <type_traits>
#include "kernel_operator.h"
#include "twin/aot.h"
#include "moe_combine_tiling.h"
#define ASCENDC_TWIN_TILING_TYPE optiling::MoeCombineTilingData
#include "moe_combine.cpp"

ASCENDC_TWIN_EXPORTS

ASCENDC_TWIN_API int MoeCombineAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    ascendc_twin::AotArgs a{"moe_combine", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(4);
        a.Expect(0, "expert_out", {"float32", "bfloat16"}, 2);
        int64_t N = a.Dim(0, 0), D = a.Dim(0, 1);
        a.Expect(1, "slot_of", {"int32"}, 2);
        int64_t T = a.Dim(1, 0), K = a.Dim(1, 1);
        a.Expect(2, "topk_weights", {"float32"}, 2);
        a.ExpectShape(2, "topk_weights", {T, K});
        a.Expect(3, "y", {"float32"}, 2);
        a.ExpectShape(3, "y", {T, D});
        const int32_t* slot = a.Ptr<int32_t>(1);
        for (int64_t i = 0; i < T * K; ++i)
            if (slot[i] < -1 || slot[i] >= N)
                ascendc_twin::BadArg("moe_combine: slot_of holds " + std::to_string(slot[i]) + ", outside -1.." + std::to_string(N - 1));
        optiling::MoeCombineTilingData td;
        const ascendc_twin::SocSpec& soc = ascendc_twin::CurrentSoc();
        if (const char* err = moe_combine_host::ComputeTiling(T, D, K, N, soc.ubBytes, soc.vectorCores, td))
            ascendc_twin::BadArg(std::string("moe_combine tiling: ") + err);
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "moe_combine";
        spec.blockDim = td.usedCores;
        spec.tilingKey = moe_combine_host::TilingKey(a.DType(0) == "bfloat16");
        spec.gm = {a.Region(0, "expert_out"), a.Region(1, "slot_of"), a.Region(2, "topk_weights"), a.Region(3, "y")};
        ascendc_twin::Launch(spec, [&] {
            moe_combine(a.Ptr<uint8_t>(0), a.Ptr<uint8_t>(1), a.Ptr<uint8_t>(2), a.Ptr<uint8_t>(3), nullptr, reinterpret_cast<GM_ADDR>(&td));
        });
    });
}
