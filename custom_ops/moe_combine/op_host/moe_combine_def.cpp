// CANN host side of moe_combine: op definition, shape inference and tiling (CANN builds only).
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "moe_combine_tiling.h"

namespace optiling {
static ge::graphStatus MoeCombineTilingFunc(gert::TilingContext* context) {
    auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    uint64_t ub = 0;
    plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    const auto& eo = context->GetInputShape(0)->GetStorageShape();
    const auto& slot = context->GetInputShape(1)->GetStorageShape();
    MoeCombineTilingData td;
    if (moe_combine_host::ComputeTiling(slot.GetDim(0), eo.GetDim(1), slot.GetDim(1), eo.GetDim(0), ub, plat.GetCoreNumAiv(), td) != nullptr)
        return ge::GRAPH_FAILED;
    td.SaveToBuffer(context->GetRawTilingData()->GetData(), context->GetRawTilingData()->GetCapacity());
    context->GetRawTilingData()->SetDataSize(td.GetDataSize());
    context->SetBlockDim(td.get_usedCores());
    context->SetTilingKey(moe_combine_host::TilingKey(context->GetInputDesc(0)->GetDataType() == ge::DT_BF16));
    size_t* ws = context->GetWorkspaceSizes(1);
    ws[0] = plat.GetLibApiWorkSpaceSize();
    return ge::GRAPH_SUCCESS;
}
}  // namespace optiling

namespace ge {
static ge::graphStatus MoeCombineInferShape(gert::InferShapeContext* context) {
    *context->GetOutputShape(0) = gert::Shape({context->GetInputShape(1)->GetDim(0), context->GetInputShape(0)->GetDim(1)});
    return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class MoeCombine : public OpDef {
public:
    explicit MoeCombine(const char* name) : OpDef(name) {
        this->Input("expert_out").ParamType(REQUIRED).DataType({ge::DT_FLOAT, ge::DT_BF16}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
        this->Input("slot_of").ParamType(REQUIRED).DataType({ge::DT_INT32, ge::DT_INT32}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
        this->Input("topk_weights").ParamType(REQUIRED).DataType({ge::DT_FLOAT, ge::DT_FLOAT}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
        this->Output("y").ParamType(REQUIRED).DataType({ge::DT_FLOAT, ge::DT_FLOAT}).Format({ge::FORMAT_ND, ge::FORMAT_ND});
        this->SetInferShape(ge::MoeCombineInferShape);
        this->AICore().SetTiling(optiling::MoeCombineTilingFunc);
        this->AICore().AddConfig("ascend910b");
        this->AICore().AddConfig("ascend910_93");
        this->AICore().AddConfig("ascend950");
    }
};
OP_ADD(MoeCombine);
}  // namespace ops
