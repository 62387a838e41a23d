// Tiling-data macros: a plain struct with set_/get_ accessors, as the CANN host macros provide,
// and GET_TILING_DATA / TILING_KEY_IS for the kernel side.
#pragma once
#include <cstring>
#include "runtime.h"

#ifndef BEGIN_TILING_DATA_DEF
#define BEGIN_TILING_DATA_DEF(name) struct name {
#define TILING_DATA_FIELD_DEF(type, field)            \
    type field = 0;                                   \
    void set_##field(type v) { field = v; }           \
    type get_##field() const { return field; }
#define END_TILING_DATA_DEF };
#define REGISTER_TILING_DATA_CLASS(op, cls)
#endif

// The twin entry defines ASCENDC_TWIN_TILING_TYPE before including the kernel source.
#define GET_TILING_DATA(var, tiling)  \
    ASCENDC_TWIN_TILING_TYPE var;     \
    std::memcpy(&var, (tiling), sizeof(var))
#define TILING_KEY_IS(k) (ascendc_twin::Ctx()->tilingKey == static_cast<uint64_t>(k))
