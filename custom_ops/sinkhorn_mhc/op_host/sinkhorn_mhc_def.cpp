// CANN host side of sinkhorn_mhc: op definition, shape inference and tiling (built only with the CANN
// toolkit, see custom_ops/README.md "Ascend build").  The tiling arithmetic is sinkhorn_mhc_tiling.h,
// which the CPU twin compiles and tests too.
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "sinkhorn_mhc_tiling.h"

namespace optiling {
static ge::graphStatus SinkhornMhcTilingFunc(gert::TilingContext* context) {
    auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    uint64_t ub = 0;
    plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    const gert::StorageShape* mixes = context->GetInputShape(0);
    uint64_t tokens = mixes->GetStorageShape().GetDim(0);
    uint32_t n = sinkhorn_mhc_host::HcMultFromWidth(mixes->GetStorageShape().GetDim(1));
    const auto* attrs = context->GetAttrs();
    uint32_t iters = static_cast<uint32_t>(*attrs->GetAttrPointer<int64_t>(0));
    float eps = *attrs->GetAttrPointer<float>(1);
    SinkhornMhcTilingData td;
    if (sinkhorn_mhc_host::ComputeTiling(tokens, n, iters, eps, ub, plat.GetCoreNumAiv(), td) != nullptr)
        return ge::GRAPH_FAILED;
    td.SaveToBuffer(context->GetRawTilingData()->GetData(), context->GetRawTilingData()->GetCapacity());
    context->GetRawTilingData()->SetDataSize(td.GetDataSize());
    context->SetBlockDim(td.get_usedCores());
    context->SetTilingKey(0);
    size_t* ws = context->GetWorkspaceSizes(1);
    ws[0] = plat.GetLibApiWorkSpaceSize();
    return ge::GRAPH_SUCCESS;
}
}  // namespace optiling

namespace ge {
static ge::graphStatus SinkhornMhcInferShape(gert::InferShapeContext* context) {
    const gert::Shape* mixes = context->GetInputShape(0);
    int64_t t = mixes->GetDim(0);
    int64_t n = sinkhorn_mhc_host::HcMultFromWidth(mixes->GetDim(1));
    if (n == 0) return GRAPH_FAILED;
    *context->GetOutputShape(0) = gert::Shape({t, n});
    *context->GetOutputShape(1) = gert::Shape({t, n});
    *context->GetOutputShape(2) = gert::Shape({t, n, n});
    return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class SinkhornMhc : public OpDef {
public:
    explicit SinkhornMhc(const char* name) : OpDef(name) {
        this->Input("mixes").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Input("hc_scale").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Input("hc_base").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Output("pre").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Output("post").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Output("comb").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Attr("iters").AttrType(OPTIONAL).Int(20);
        this->Attr("eps").AttrType(OPTIONAL).Float(1e-6f);
        this->SetInferShape(ge::SinkhornMhcInferShape);
        this->AICore().SetTiling(optiling::SinkhornMhcTilingFunc);
        this->AICore().AddConfig("ascend910b");
        this->AICore().AddConfig("ascend910_93");
        this->AICore().AddConfig("ascend950");
    }
};
OP_ADD(SinkhornMhc);
}  // namespace ops
