// Tiling of sparse_fp8_decode, shared by the CANN host build and the CPU twin.
#pragma once
#include <cstdint>
#ifdef ASCENDC_CPU_TWIN
#include "twin/tiling.h"
#else
#include "register/tilingdata_base.h"
#endif

namespace optiling {
BEGIN_TILING_DATA_DEF(SparseFp8DecodeTilingData)
TILING_DATA_FIELD_DEF(uint32_t, batch);
TILING_DATA_FIELD_DEF(uint32_t, heads);
TILING_DATA_FIELD_DEF(uint32_t, headGroup);       // heads per work item (UB-bound)
TILING_DATA_FIELD_DEF(uint32_t, groups);          // ceil(heads / headGroup)
TILING_DATA_FIELD_DEF(uint32_t, topk);            // indices per row, main cache
TILING_DATA_FIELD_DEF(uint32_t, extraTopk);       // indices per row, extra cache (0 = none)
TILING_DATA_FIELD_DEF(uint32_t, pageBlock);       // tokens per page block, main cache
TILING_DATA_FIELD_DEF(uint32_t, extraPageBlock);
TILING_DATA_FIELD_DEF(uint32_t, cacheBlocks);     // page blocks in the main cache
TILING_DATA_FIELD_DEF(uint32_t, extraBlocks);
TILING_DATA_FIELD_DEF(uint32_t, tileEntries);     // KV entries dequantised per UB tile (multiple of 8)
TILING_DATA_FIELD_DEF(uint32_t, usedCores);
TILING_DATA_FIELD_DEF(float, softmaxScale);
TILING_DATA_FIELD_DEF(uint32_t, fp8VectorCast);   // 1: Cast fp8 -> float on the vector unit; 0: software decode
END_TILING_DATA_DEF;
REGISTER_TILING_DATA_CLASS(SparseFp8Decode, SparseFp8DecodeTilingData)
}  // namespace optiling

namespace sparse_fp8_decode_host {

constexpr uint32_t kDim = 512, kNope = 448, kRope = 64, kDataBytes = 576, kScaleBytes = 8, kTokenBytes = 584;
constexpr uint32_t kRawBuffers = 2;

inline uint64_t Align32(uint64_t n) { return (n + 31) / 32 * 32; }

constexpr uint32_t kDecodeScratchTensors = 7;   // v4k::kE4M3ScratchTensors (common/op_kernel/fp8_decode.h)

// UB bytes that do not depend on the head group: raw KV tiles, dequantised tile, the software e4m3 decode's
// scratch (SoCs without an fp8 vector Cast), work, ids, score staging slots, their gather offsets
inline uint64_t UbFixedBytes(uint32_t tile, bool fp8Vector) {
    return kRawBuffers * Align32(uint64_t(tile) * (kDataBytes + 32)) + uint64_t(tile) * kDim * 4 +
           (fp8Vector ? 0 : Align32(uint64_t(kDecodeScratchTensors) * kNope * 2)) + kDim * 4 + 256 + 32 +
           Align32(tile * 4) + uint64_t(tile) * 8 * 4 + Align32(tile * 4);
}
// UB bytes per head of the group: q, accumulator, scores, running max / sum, lse.
inline uint64_t UbBytesPerHead(uint32_t tile) { return 2 * kDim * 4 + uint64_t(tile) * 4 + 3 * 4; }
inline uint64_t UbBytesFor(uint32_t group, uint32_t tile, bool fp8Vector) {
    return UbFixedBytes(tile, fp8Vector) + 2 * uint64_t(group) * kDim * 4 + uint64_t(group) * tile * 4 + 3 * Align32(group * 4);
}

template <class TD>
inline const char* ComputeTiling(uint32_t batch, uint32_t heads, uint32_t topk, uint32_t extraTopk, uint32_t pageBlock,
                                 uint32_t extraPageBlock, uint32_t cacheBlocks, uint32_t extraBlocks, float scale, bool fp8Vector, uint64_t ubBytes, uint32_t cores,
                                 TD& td) {
    const uint32_t tile = 16;
    if (heads == 0 || batch == 0) return "batch and heads must be >= 1";
    if (cores == 0) return "no vector cores";
    if (pageBlock == 0 || (extraTopk > 0 && extraPageBlock == 0)) return "page block size must be >= 1";
    uint32_t group = heads;
    while (group > 0 && UbBytesFor(group, tile, fp8Vector) > ubBytes) --group;
    if (group == 0) return "the Unified Buffer cannot hold one head and one KV tile";
    uint32_t groups = (heads + group - 1) / group;
    group = (heads + groups - 1) / groups;  // balance the groups
    uint64_t items = uint64_t(batch) * groups;
    td.set_batch(batch);
    td.set_heads(heads);
    td.set_headGroup(group);
    td.set_groups(groups);
    td.set_topk(topk);
    td.set_extraTopk(extraTopk);
    td.set_pageBlock(pageBlock);
    td.set_extraPageBlock(extraTopk ? extraPageBlock : pageBlock);
    td.set_cacheBlocks(cacheBlocks);
    td.set_extraBlocks(extraBlocks);
    td.set_tileEntries(tile);
    td.set_usedCores(static_cast<uint32_t>(items < cores ? items : cores));
    td.set_softmaxScale(scale);
    td.set_fp8VectorCast(fp8Vector ? 1 : 0);
    return nullptr;
}

}  // namespace sparse_fp8_decode_host
