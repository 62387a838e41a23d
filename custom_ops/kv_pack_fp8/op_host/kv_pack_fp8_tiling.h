// Tiling of kv_pack_fp8, shared by the CANN host build and the CPU twin.
#pragma once
#include <cstdint>
#ifdef ASCENDC_CPU_TWIN
#include "twin/tiling.h"
#else
#include "register/tilingdata_base.h"
#endif

namespace optiling {
BEGIN_TILING_DATA_DEF(KvPackFp8TilingData)
TILING_DATA_FIELD_DEF(uint32_t, entries);        // N rows of `entries` / `slots`
TILING_DATA_FIELD_DEF(uint32_t, pageBlock);      // P tokens per page block
TILING_DATA_FIELD_DEF(uint32_t, cacheBlocks);    // page blocks in the cache
TILING_DATA_FIELD_DEF(uint32_t, blocksPerCore);  // page blocks owned (copied + written) by one core
TILING_DATA_FIELD_DEF(uint32_t, usedCores);
TILING_DATA_FIELD_DEF(uint32_t, copyChunk);      // bytes per UB buffer of the cache copy (multiple of 32)
TILING_DATA_FIELD_DEF(uint32_t, slotTile);       // slots read into UB at a time (multiple of 8)
TILING_DATA_FIELD_DEF(uint32_t, fp8VectorCast);  // 1: Cast to fp8 on the vector unit; 0: scalar encode
END_TILING_DATA_DEF;
REGISTER_TILING_DATA_CLASS(KvPackFp8, KvPackFp8TilingData)
}  // namespace optiling

namespace kv_pack_fp8_host {

constexpr uint32_t kDim = 512, kNope = 448, kRope = 64, kTile = 64;
constexpr uint32_t kDataBytes = 576, kScaleBytes = 8, kTokenBytes = 584;
constexpr uint32_t kMaxChunk = 64 * 1024, kMaxSlotTile = 1024;

inline uint64_t Align32(uint64_t n) { return (n + 31) / 32 * 32; }
// UB bytes besides the copy buffers: entry row (f32), |tile|, packed row + scale group, reduce, work, slots
inline uint64_t UbFixedBytes(uint32_t slotTile) {
    return kDim * 4 + kTile * 4 + kDataBytes + 32 + 32 + 256 + Align32(uint64_t(slotTile) * 4);
}
inline uint64_t UbBytes(uint32_t chunk, uint32_t slotTile) { return UbFixedBytes(slotTile) + 2 * uint64_t(chunk); }

template <class TD>
inline const char* ComputeTiling(uint32_t entries, uint32_t pageBlock, uint32_t cacheBlocks, bool fp8Vector,
                                 uint64_t ubBytes, uint32_t cores, TD& td) {
    if (pageBlock == 0) return "page block size must be >= 1";
    if (cacheBlocks == 0) return "the cache must hold at least one page block";
    if (cores == 0) return "no vector cores";
    uint32_t slotTile = entries < kMaxSlotTile ? (entries + 7) / 8 * 8 : kMaxSlotTile;
    if (slotTile == 0) slotTile = 8;
    while (slotTile > 8 && UbBytes(32, slotTile) > ubBytes) slotTile -= 8;
    if (UbBytes(32, slotTile) > ubBytes) return "the Unified Buffer cannot hold one entry, its packed row and 32-byte copy buffers";
    uint64_t room = (ubBytes - UbFixedBytes(slotTile)) / 2 / 32 * 32;
    uint32_t chunk = static_cast<uint32_t>(room < kMaxChunk ? room : kMaxChunk);
    uint32_t per = (cacheBlocks + cores - 1) / cores;
    td.set_entries(entries);
    td.set_pageBlock(pageBlock);
    td.set_cacheBlocks(cacheBlocks);
    td.set_blocksPerCore(per);
    td.set_usedCores((cacheBlocks + per - 1) / per);
    td.set_copyChunk(chunk);
    td.set_slotTile(slotTile);
    td.set_fp8VectorCast(fp8Vector ? 1 : 0);
    return nullptr;
}

}  // namespace kv_pack_fp8_host
