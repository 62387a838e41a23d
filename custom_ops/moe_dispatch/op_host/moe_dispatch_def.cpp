// CANN host side of moe_dispatch: op definition, shape inference and tiling (CANN builds only).
#include <vector>
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "moe_dispatch_tiling.h"

namespace optiling {
static ge::graphStatus MoeDispatchTilingFunc(gert::TilingContext* context) {
    auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    uint64_t ub = 0;
    plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    const auto& x = context->GetInputShape(0)->GetStorageShape();
    uint32_t k = context->GetInputShape(1)->GetStorageShape().GetDim(1);
    const auto* attrs = context->GetAttrs();
    uint32_t experts = *attrs->GetAttrPointer<int64_t>(0), ep = *attrs->GetAttrPointer<int64_t>(1);
    bool fp8 = context->GetOutputDesc(0)->GetDataType() == ge::DT_UINT8;  // matches the fp8 attribute
    bool bf16 = context->GetInputDesc(0)->GetDataType() == ge::DT_BF16;
    MoeDispatchTilingData td;
    // fp8VectorCast=false: the scalar fp8 encode runs on every claimed SoC; the 950's vector Cast
    // path (what the twin takes on ascend950) needs a SoC-version check not verified without CANN.
    if (moe_dispatch_host::ComputeTiling(x.GetDim(0), x.GetDim(1), k, experts, ep, /*fp8VectorCast=*/false, ub,
                                         plat.GetCoreNumAiv(), td) != nullptr)
        return ge::GRAPH_FAILED;
    td.SaveToBuffer(context->GetRawTilingData()->GetData(), context->GetRawTilingData()->GetCapacity());
    context->GetRawTilingData()->SetDataSize(td.GetDataSize());
    context->SetBlockDim(td.get_usedCores());
    context->SetTilingKey(moe_dispatch_host::TilingKey(bf16, fp8));
    size_t* ws = context->GetWorkspaceSizes(1);
    ws[0] = plat.GetLibApiWorkSpaceSize();
    return ge::GRAPH_SUCCESS;
}
}  // namespace optiling

namespace ge {
static ge::graphStatus MoeDispatchInferShape(gert::InferShapeContext* context) {
    const gert::Shape* x = context->GetInputShape(0);
    int64_t t = x->GetDim(0), d = x->GetDim(1), k = context->GetInputShape(1)->GetDim(1);
    const auto* attrs = context->GetAttrs();
    int64_t e = *attrs->GetAttrPointer<int64_t>(0), ep = *attrs->GetAttrPointer<int64_t>(1);
    *context->GetOutputShape(0) = gert::Shape({t * k, d});
    *context->GetOutputShape(1) = gert::Shape({t * k, (d + 127) / 128});
    *context->GetOutputShape(2) = gert::Shape({t * k});
    *context->GetOutputShape(3) = gert::Shape({t * k});
    *context->GetOutputShape(4) = gert::Shape({t, k});
    *context->GetOutputShape(5) = gert::Shape({e});
    *context->GetOutputShape(6) = gert::Shape({e + 1});
    *context->GetOutputShape(7) = gert::Shape({ep});
    *context->GetOutputShape(8) = gert::Shape({ep});
    return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class MoeDispatch : public OpDef {
public:
    explicit MoeDispatch(const char* name) : OpDef(name) {
        // four dtype combinations: payload fp32 / bf16, each plain or FP8 (recv_x = e4m3 codes as uint8)
        const std::vector<ge::DataType> x = {ge::DT_FLOAT, ge::DT_BF16, ge::DT_FLOAT, ge::DT_BF16};
        const std::vector<ge::DataType> recv = {ge::DT_FLOAT, ge::DT_BF16, ge::DT_UINT8, ge::DT_UINT8};
        const std::vector<ge::Format> nd(4, ge::FORMAT_ND);
        const std::vector<ge::DataType> i32(4, ge::DT_INT32), f32(4, ge::DT_FLOAT), u8(4, ge::DT_UINT8);
        this->Input("x").ParamType(REQUIRED).DataType(x).Format(nd);
        this->Input("topk_idx").ParamType(REQUIRED).DataType(i32).Format(nd);
        this->Input("topk_weights").ParamType(REQUIRED).DataType(f32).Format(nd);
        this->Output("recv_x").ParamType(REQUIRED).DataType(recv).Format(nd);
        this->Output("recv_scale").ParamType(REQUIRED).DataType(u8).Format(nd);
        this->Output("recv_weights").ParamType(REQUIRED).DataType(f32).Format(nd);
        for (const char* o : {"recv_token", "slot_of", "expert_counts", "expert_offsets", "rank_counts", "rank_token_counts"})
            this->Output(o).ParamType(REQUIRED).DataType(i32).Format(nd);
        this->Attr("num_experts").AttrType(REQUIRED).Int();
        this->Attr("ep_size").AttrType(OPTIONAL).Int(1);
        this->Attr("fp8").AttrType(OPTIONAL).Bool(false);
        this->SetInferShape(ge::MoeDispatchInferShape);
        this->AICore().SetTiling(optiling::MoeDispatchTilingFunc);
        this->AICore().AddConfig("ascend910b");
        this->AICore().AddConfig("ascend910_93");
        this->AICore().AddConfig("ascend950");
    }
};
OP_ADD(MoeDispatch);
}  // namespace ops
