// Tiling of moe_combine, shared by the CANN host build and the CPU twin.
#pragma once
#include <cstdint>
#ifdef ASCENDC_CPU_TWIN
#include "twin/tiling.h"
#else
#include "register/tilingdata_base.h"
#endif

namespace optiling {
BEGIN_TILING_DATA_DEF(MoeCombineTilingData)
TILING_DATA_FIELD_DEF(uint32_t, tokens);
TILING_DATA_FIELD_DEF(uint32_t, hidden);
TILING_DATA_FIELD_DEF(uint32_t, topk);
TILING_DATA_FIELD_DEF(uint32_t, rows);           // rows of expert_out
TILING_DATA_FIELD_DEF(uint32_t, tokensPerCore);
TILING_DATA_FIELD_DEF(uint32_t, usedCores);
TILING_DATA_FIELD_DEF(uint32_t, chunk);          // hidden elements per UB chunk (multiple of 64)
END_TILING_DATA_DEF;
REGISTER_TILING_DATA_CLASS(MoeCombine, MoeCombineTilingData)
}  // namespace optiling

namespace moe_combine_host {

inline uint64_t TilingKey(bool bf16) { return bf16 ? 1 : 0; }
// UB bytes: double-buffered expert row chunk, its fp32 copy, the fp32 accumulator
inline uint64_t UbBytes(uint32_t chunk) { return uint64_t(chunk) * 4 * 4; }

template <class TD>
inline const char* ComputeTiling(uint32_t tokens, uint32_t hidden, uint32_t topk, uint32_t rows, uint64_t ubBytes,
                                 uint32_t cores, TD& td) {
    if (hidden == 0 || topk == 0) return "hidden and topk must be >= 1";
    if (cores == 0) return "no vector cores";
    uint32_t chunk = (hidden + 63) / 64 * 64;
    uint32_t fit = static_cast<uint32_t>(ubBytes / 16 / 64 * 64);
    if (fit < 64) return "the Unified Buffer cannot hold a 64-element chunk";
    if (chunk > fit) chunk = fit;
    uint32_t per = tokens == 0 ? 1 : (tokens + cores - 1) / cores;
    td.set_tokens(tokens);
    td.set_hidden(hidden);
    td.set_topk(topk);
    td.set_rows(rows);
    td.set_tokensPerCore(per);
    td.set_usedCores(tokens == 0 ? 1 : (tokens + per - 1) / per);
    td.set_chunk(chunk);
    return nullptr;
}

}  // namespace moe_combine_host
