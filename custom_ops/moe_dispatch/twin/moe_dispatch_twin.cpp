// CPU twin entry of moe_dispatch.  aot inputs: x [T,D] f32/bf16, topk_idx [T,k] i32, topk_weights [T,k] f32,
// attrs [3] i32 = (num_experts, ep_size, fp8); outputs as listed in op_kernel/moe_dispatch.cpp.
#include <type_traits>
#include "kernel_operator.h"
#include "twin/aot.h"
#include "moe_dispatch_tiling.h"
#define ASCENDC_TWIN_TILING_TYPE optiling::MoeDispatchTilingData
#include "moe_dispatch.cpp"

ASCENDC_TWIN_EXPORTS

ASCENDC_TWIN_API int MoeDispatchAot(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes, void*, void*) {
    ascendc_twin::AotArgs a{"moe_dispatch", nparam, params, ndims, shapes, dtypes};
    return ascendc_twin::Guard([&] {
        a.Count(13);
        a.Expect(0, "x", {"float32", "bfloat16"}, 2);
        int64_t T = a.Dim(0, 0), D = a.Dim(0, 1);
        a.Expect(1, "topk_idx", {"int32"}, 2);
        int64_t K = a.Dim(1, 1);
        a.ExpectShape(1, "topk_idx", {T, K});
        a.Expect(2, "topk_weights", {"float32"}, 2);
        a.ExpectShape(2, "topk_weights", {T, K});
        a.Expect(3, "attrs", {"int32"}, 1);
        a.ExpectShape(3, "attrs", {3});
        int32_t E = a.Ptr<int32_t>(3)[0], ep = a.Ptr<int32_t>(3)[1];
        bool fp8 = a.Ptr<int32_t>(3)[2] != 0, bf16 = a.DType(0) == "bfloat16";
        if (E < 1 || ep < 1 || E % ep != 0) ascendc_twin::BadArg("moe_dispatch: num_experts must be a positive multiple of ep_size");
        if (K > 16) ascendc_twin::BadArg("moe_dispatch: topk must be <= 16");
        int64_t N = T * K, S = (D + 127) / 128;
        a.Expect(4, "recv_x", {fp8 ? "uint8" : (bf16 ? "bfloat16" : "float32")}, 2);
        a.ExpectShape(4, "recv_x", {N, D});
        a.Expect(5, "recv_scale", {"uint8"}, 2);
        a.ExpectShape(5, "recv_scale", {N, S});
        a.ExpectShape(6, "recv_weights", {N});
        a.ExpectShape(7, "recv_token", {N});
        a.ExpectShape(8, "slot_of", {T, K});
        a.ExpectShape(9, "expert_counts", {E});
        a.ExpectShape(10, "expert_offsets", {E + 1});
        a.ExpectShape(11, "rank_counts", {ep});
        a.ExpectShape(12, "rank_token_counts", {ep});
        a.Expect(6, "recv_weights", {"float32"}, 1);
        for (int i = 7; i < 13; ++i) a.Expect(i, "layout outputs", {"int32"}, -1);
        optiling::MoeDispatchTilingData td;
        const ascendc_twin::SocSpec& soc = ascendc_twin::CurrentSoc();
        if (const char* err = moe_dispatch_host::ComputeTiling(T, D, K, E, ep, soc.fp8VectorCast, soc.ubBytes, soc.vectorCores, td))
            ascendc_twin::BadArg(std::string("moe_dispatch tiling: ") + err);
        ascendc_twin::LaunchSpec spec;
        spec.kernel = "moe_dispatch";
        spec.blockDim = td.usedCores;
        spec.tilingKey = moe_dispatch_host::TilingKey(bf16, fp8);
        const char* names[13] = {"x", "topk_idx", "topk_weights", "attrs", "recv_x", "recv_scale", "recv_weights", "recv_token",
                                 "slot_of", "expert_counts", "expert_offsets", "rank_counts", "rank_token_counts"};
        for (int i = 0; i < 13; ++i) if (i != 3) spec.gm.push_back(a.Region(i, names[i]));
        ascendc_twin::Launch(spec, [&] {
            moe_dispatch(a.Ptr<uint8_t>(0), a.Ptr<uint8_t>(1), a.Ptr<uint8_t>(2), a.Ptr<uint8_t>(4), a.Ptr<uint8_t>(5),
                         a.Ptr<uint8_t>(6), a.Ptr<uint8_t>(7), a.Ptr<uint8_t>(8), a.Ptr<uint8_t>(9), a.Ptr<uint8_t>(10),
                         a.Ptr<uint8_t>(11), a.Ptr<uint8_t>(12), nullptr, reinterpret_cast<GM_ADDR>(&td));
        });
    });
}
