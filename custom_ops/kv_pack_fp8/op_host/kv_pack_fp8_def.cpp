// CANN host side of kv_pack_fp8: op definition, shape inference and tiling (CANN builds only).
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "kv_pack_fp8_tiling.h"

namespace optiling {
static ge::graphStatus KvPackFp8TilingFunc(gert::TilingContext* context) {
    using namespace kv_pack_fp8_host;
    auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    uint64_t ub = 0;
    plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    const auto& cache = context->GetInputShape(0)->GetStorageShape();
    uint32_t n = static_cast<uint32_t>(context->GetInputShape(1)->GetStorageShape().GetDim(0));
    KvPackFp8TilingData td;
    // fp8VectorCast=false: the scalar fp8 encode runs on every claimed SoC; the 950's vector Cast
    // path (what the twin takes on ascend950) needs a SoC-version check not verified without CANN.
    if (ComputeTiling(n, static_cast<uint32_t>(cache.GetDim(1) / kTokenBytes), static_cast<uint32_t>(cache.GetDim(0)),
                      /*fp8VectorCast=*/false, ub, plat.GetCoreNumAiv(), td) != nullptr)
        return ge::GRAPH_FAILED;
    td.SaveToBuffer(context->GetRawTilingData()->GetData(), context->GetRawTilingData()->GetCapacity());
    context->GetRawTilingData()->SetDataSize(td.GetDataSize());
    context->SetBlockDim(td.get_usedCores());
    size_t* ws = context->GetWorkspaceSizes(1);
    ws[0] = plat.GetLibApiWorkSpaceSize();
    return ge::GRAPH_SUCCESS;
}
}  // namespace optiling

namespace ge {
static ge::graphStatus KvPackFp8InferShape(gert::InferShapeContext* context) {
    *context->GetOutputShape(0) = *context->GetInputShape(0);   // out has the cache's shape
    return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class KvPackFp8 : public OpDef {
public:
    explicit KvPackFp8(const char* name) : OpDef(name) {
        this->Input("cache").ParamType(REQUIRED).DataType({ge::DT_UINT8}).Format({ge::FORMAT_ND});
        this->Input("entries").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Input("slots").ParamType(REQUIRED).DataType({ge::DT_INT32}).Format({ge::FORMAT_ND});
        this->Output("out").ParamType(REQUIRED).DataType({ge::DT_UINT8}).Format({ge::FORMAT_ND});
        this->SetInferShape(ge::KvPackFp8InferShape);
        this->AICore().SetTiling(optiling::KvPackFp8TilingFunc);
        this->AICore().AddConfig("ascend910b");
        this->AICore().AddConfig("ascend910_93");
        this->AICore().AddConfig("ascend950");
    }
};
OP_ADD(KvPackFp8);
}  // namespace ops
