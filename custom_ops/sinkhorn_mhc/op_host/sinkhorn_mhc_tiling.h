// Tiling of sinkhorn_mhc: tiling data (CANN macros) and the tiling computation, shared by the CANN
// host build (op_host/sinkhorn_mhc_def.cpp) and the CPU twin (twin/sinkhorn_mhc_twin.cpp).
#pragma once
#include <cstdint>
#ifdef ASCENDC_CPU_TWIN
#include "twin/tiling.h"
#else
#include "register/tilingdata_base.h"
#endif

namespace optiling {
BEGIN_TILING_DATA_DEF(SinkhornMhcTilingData)
TILING_DATA_FIELD_DEF(uint32_t, totalTokens);
TILING_DATA_FIELD_DEF(uint32_t, hcMult);
TILING_DATA_FIELD_DEF(uint32_t, tokensPerCore);  // contiguous tokens per block
TILING_DATA_FIELD_DEF(uint32_t, tileTokens);     // tokens per UB tile, multiple of 8
TILING_DATA_FIELD_DEF(uint32_t, usedCores);      // blockDim
TILING_DATA_FIELD_DEF(uint32_t, iters);
TILING_DATA_FIELD_DEF(float, eps);
END_TILING_DATA_DEF;
REGISTER_TILING_DATA_CLASS(SinkhornMhc, SinkhornMhcTilingData)
}  // namespace optiling

namespace sinkhorn_mhc_host {

constexpr uint32_t kInBuffers = 2;  // double-buffered input tile

inline uint32_t MixWidth(uint32_t n) { return (2 + n) * n; }

// UB bytes per token of a tile: input (x2), SoA copy, gather offsets in/out, output, 2 work rows.
inline uint64_t UbBytesPerToken(uint32_t n) {
    uint64_t m = MixWidth(n);
    return 4 * (kInBuffers * m + m + m + n + n * n + (2 * n + n * n) + 2);
}
// UB bytes independent of the tile: scale (one 32-byte block) and base (rounded to 32 bytes).
inline uint64_t UbFixedBytes(uint32_t n) { return 32 + (MixWidth(n) * 4 + 31) / 32 * 32; }

// hc_mult n from the mix width (2+n)n; 0 when the width fits no n.
inline uint32_t HcMultFromWidth(uint64_t width) {
    for (uint32_t n = 1; n <= 64; ++n) if (MixWidth(n) == width) return n;
    return 0;
}

// Fills td; returns nullptr, or a message saying why no tiling exists.
template <class TD>
inline const char* ComputeTiling(uint64_t tokens, uint32_t n, uint32_t iters, float eps, uint64_t ubBytes, uint32_t cores, TD& td) {
    if (n == 0) return "hc_mult must be >= 1";
    if (iters == 0) return "iters must be >= 1";
    if (tokens > 0xffffffffull / MixWidth(n)) return "too many tokens for 32-bit offsets";
    if (cores == 0) return "no vector cores";
    uint64_t perCore = (tokens + cores - 1) / cores;
    if (perCore == 0) perCore = 1;
    uint64_t fit = ubBytes > UbFixedBytes(n) ? (ubBytes - UbFixedBytes(n)) / UbBytesPerToken(n) / 8 * 8 : 0;
    if (fit < 8) return "the Unified Buffer cannot hold a tile of 8 tokens";
    uint64_t tile = (perCore + 7) / 8 * 8;
    if (tile > fit) tile = fit;
    td.set_totalTokens(static_cast<uint32_t>(tokens));
    td.set_hcMult(n);
    td.set_tokensPerCore(static_cast<uint32_t>(perCore));
    td.set_tileTokens(static_cast<uint32_t>(tile));
    td.set_usedCores(static_cast<uint32_t>((tokens + perCore - 1) / perCore));
    td.set_iters(iters);
    td.set_eps(eps);
    return nullptr;
}

}  // namespace sinkhorn_mhc_host
