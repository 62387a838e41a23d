// Tiling of moe_dispatch, shared by the CANN host build and the CPU twin.
#pragma once
#include <cstdint>
#ifdef ASCENDC_CPU_TWIN
#include "twin/tiling.h"
#else
#include "register/tilingdata_base.h"
#endif

namespace optiling {
BEGIN_TILING_DATA_DEF(MoeDispatchTilingData)
TILING_DATA_FIELD_DEF(uint32_t, tokens);
TILING_DATA_FIELD_DEF(uint32_t, hidden);
TILING_DATA_FIELD_DEF(uint32_t, topk);
TILING_DATA_FIELD_DEF(uint32_t, experts);
TILING_DATA_FIELD_DEF(uint32_t, epSize);
TILING_DATA_FIELD_DEF(uint32_t, tokensPerCore);
TILING_DATA_FIELD_DEF(uint32_t, usedCores);
TILING_DATA_FIELD_DEF(uint32_t, chunk);          // hidden elements per UB chunk (multiple of 128)
TILING_DATA_FIELD_DEF(uint32_t, scaleCols);      // ceil(hidden / 128)
TILING_DATA_FIELD_DEF(uint32_t, fp8VectorCast);  // 1: Cast to fp8 on the vector unit; 0: scalar encode
END_TILING_DATA_DEF;
REGISTER_TILING_DATA_CLASS(MoeDispatch, MoeDispatchTilingData)
}  // namespace optiling

namespace moe_dispatch_host {

constexpr uint32_t kQuantTile = 128;
constexpr uint32_t kMinTokensPerCore = 256;
// tiling keys: payload element bf16 (+1), FP8 payload (+2)
inline uint64_t TilingKey(bool bf16, bool fp8) { return (bf16 ? 1 : 0) + (fp8 ? 2 : 0); }

inline uint64_t Align32(uint64_t n) { return (n + 31) / 32 * 32; }
// UB bytes: input chunk, fp32 chunk, |x| chunk, codes, scale bytes, counts + cursors + rank marks
inline uint64_t UbBytes(uint32_t chunk, uint32_t experts, uint32_t ep, uint32_t scaleCols) {
    return Align32(chunk * 4) * 3 + Align32(chunk) + Align32(scaleCols) + 32 + 2 * Align32(uint64_t(experts + 1) * 4) + Align32(ep * 4) + 256;
}

template <class TD>
inline const char* ComputeTiling(uint32_t tokens, uint32_t hidden, uint32_t topk, uint32_t experts, uint32_t ep,
                                 bool fp8Vector, uint64_t ubBytes, uint32_t cores, TD& td) {
    if (hidden == 0 || topk == 0) return "hidden and topk must be >= 1";
    if (experts == 0 || ep == 0 || experts % ep != 0) return "num_experts must be a positive multiple of ep_size";
    if (cores == 0) return "no vector cores";
    uint32_t scaleCols = (hidden + kQuantTile - 1) / kQuantTile;
    uint32_t chunk = scaleCols * kQuantTile;
    while (chunk > kQuantTile && UbBytes(chunk, experts, ep, scaleCols) > ubBytes) chunk -= kQuantTile;
    if (UbBytes(chunk, experts, ep, scaleCols) > ubBytes) return "the Unified Buffer cannot hold the expert counters and one 128-element chunk";
    // every block scans all T*k routes to place its own tokens, so give each block enough tokens
    uint32_t per = tokens == 0 ? 1 : (tokens + cores - 1) / cores;
    if (per < kMinTokensPerCore) per = kMinTokensPerCore;
    td.set_tokens(tokens);
    td.set_hidden(hidden);
    td.set_topk(topk);
    td.set_experts(experts);
    td.set_epSize(ep);
    td.set_tokensPerCore(per);
    td.set_usedCores(tokens == 0 ? 1 : (tokens + per - 1) / per);
    td.set_chunk(chunk);
    td.set_scaleCols(scaleCols);
    td.set_fp8VectorCast(fp8Vector ? 1 : 0);
    return nullptr;
}

}  // namespace moe_dispatch_host
