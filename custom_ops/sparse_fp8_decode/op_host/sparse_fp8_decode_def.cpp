// CANN host side of sparse_fp8_decode: op definition, shape inference and tiling (CANN builds only).
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "sparse_fp8_decode_tiling.h"

namespace optiling {
static ge::graphStatus SparseFp8DecodeTilingFunc(gert::TilingContext* context) {
    using namespace sparse_fp8_decode_host;
    auto plat = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    uint64_t ub = 0;
    plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    auto dim = [&](int i, int d) { return static_cast<uint32_t>(context->GetInputShape(i)->GetStorageShape().GetDim(d)); };
    float scale = *context->GetAttrs()->GetAttrPointer<float>(0);
    SparseFp8DecodeTilingData td;
    // fp8VectorCast=false: the software e4m3 decode (integer vector instructions of A2 / A3) runs on every
    // claimed SoC; the 950's vector Cast path (what the twin takes on ascend950) needs a SoC-version check
    // not verified without CANN.  Both paths give the same bits.
    if (ComputeTiling(dim(0, 0), dim(0, 1), dim(2, 1), dim(4, 1), dim(1, 1) / kTokenBytes, dim(3, 1) / kTokenBytes,
                      dim(1, 0), dim(3, 0), scale, /*fp8VectorCast=*/false, ub, plat.GetCoreNumAiv(), td) != nullptr)
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
static ge::graphStatus SparseFp8DecodeInferShape(gert::InferShapeContext* context) {
    const gert::Shape* q = context->GetInputShape(0);
    *context->GetOutputShape(0) = *q;
    *context->GetOutputShape(1) = gert::Shape({q->GetDim(0), q->GetDim(1)});
    return GRAPH_SUCCESS;
}
}  // namespace ge

namespace ops {
class SparseFp8Decode : public OpDef {
public:
    explicit SparseFp8Decode(const char* name) : OpDef(name) {
        this->Input("q").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Input("cache").ParamType(REQUIRED).DataType({ge::DT_UINT8}).Format({ge::FORMAT_ND});
        this->Input("indices").ParamType(REQUIRED).DataType({ge::DT_INT32}).Format({ge::FORMAT_ND});
        this->Input("extra_cache").ParamType(REQUIRED).DataType({ge::DT_UINT8}).Format({ge::FORMAT_ND});
        this->Input("extra_indices").ParamType(REQUIRED).DataType({ge::DT_INT32}).Format({ge::FORMAT_ND});
        this->Input("attn_sink").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Output("out").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Output("lse").ParamType(REQUIRED).DataType({ge::DT_FLOAT}).Format({ge::FORMAT_ND});
        this->Attr("softmax_scale").AttrType(REQUIRED).Float();
        this->SetInferShape(ge::SparseFp8DecodeInferShape);
        this->AICore().SetTiling(optiling::SparseFp8DecodeTilingFunc);
        this->AICore().AddConfig("ascend910b");
        this->AICore().AddConfig("ascend910_93");
        this->AICore().AddConfig("ascend950");
    }
};
OP_ADD(SparseFp8Decode);
}  // namespace ops
