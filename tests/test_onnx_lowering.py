"""MindIR -> ONNX lowering: primitives against MindSpore, and the tiny model's ONNX file."""
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from graph_compile.testing import BUCKET, compiled_tiny


def test_primitives_match_mindspore(tmp_path):
    import mindspore as ms
    from mindspore import Tensor, mint, nn, ops
    from graph_compile.lower import lower_mindir
    from graph_compile.mindir import read_mindir
    from graph_compile.weights import WeightTable
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": "O0"})

    class Net(nn.Cell):
        def construct(self, x, i, p):
            a = x[:, 1:5:2] * 2.0 + x[:, -3:].sum(-1, keepdims=True)       # StridedSlice, Muls, SumExt
            b = ops.softplus(x) - ops.silu(x) + ops.rsqrt(ops.abs(x) + 1.0) + ops.log1p(ops.exp(-ops.abs(x)))
            c = ops.round(x * 4.0) + ops.sign(x) * ops.floor(x) - ops.ceil(x)  # half-to-even Round
            _, idx = ops.topk(x, 3)
            _, order = ops.sort(ops.relu(x), axis=-1, descending=True)        # ties at 0: stable
            hot = ops.one_hot(idx, 8, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)).sum(1) + \
                ops.one_hot(order[:, 2:6], 8, Tensor(1.0, ms.float32), Tensor(0.0, ms.float32)).sum(1) * 10
            g = ops.gather_elements(x, 1, idx) + ops.gather(x, i, 0).sum(0)[:3]
            q = (p % 5) + (p // 3)                                          # int Remainder, FloorDiv
            m = mint.where(x > 0.5, x, ops.exp(x)).max(-1)
            return a, b, c, hot, g, q, m, ops.concat((x, x.T), 0).reshape(2, -1)

    x = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
    x[0, 0], x[0, 1] = 0.625, -0.375                                           # exact .5 ties after *4
    i = np.array([1, 3], np.int32)
    p = np.array(-7, np.int32)
    ms.export(Net(), Tensor(x), Tensor(i), Tensor(p), file_name=str(tmp_path / "net"), file_format="MINDIR")
    g = read_mindir(str(tmp_path / "net.mindir"))
    names = [f"o{k}" for k in range(8)]
    model = lower_mindir(g, WeightTable(None, {}), ["x", "i", "p"], names, "net")
    onnx.checker.check_model(model, full_check=True)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "i": i, "p": p})
    ref = [o.asnumpy() for o in Net()(Tensor(x), Tensor(i), Tensor(p))]
    assert int(ref[5]) == (-7 % 5) + (-7 // 3)                                # python semantics
    for k, (a, r) in enumerate(zip(got, ref)):
        assert a.shape == r.shape and a.dtype == r.dtype
        if k in (2, 3, 5, 7):                      # rounding, one-hot, integer ops, reshapes: exact
            np.testing.assert_array_equal(a, r)
        else:                                      # float32 transcendentals of two libraries
            np.testing.assert_allclose(a, r, rtol=1e-5, atol=1e-5)


def _stored_weight_net(tmp_path, codes, misuse=False):
    """A MindIR of W + x (FP8 StoredWeight [4, 256]) and embedding rows (bf16 bits [8, 16]),
    lowered with a WeightTable over a stub checkpoint holding the same bytes."""
    import ml_dtypes
    import mindspore as ms
    from mindspore import Tensor, nn, ops
    from ascend_v4.weights import StoredWeight
    from graph_compile.lower import lower_mindir
    from graph_compile.mindir import read_mindir, short_name
    from graph_compile.weights import WeightTable
    ms.set_context(mode=ms.GRAPH_MODE, jit_config={"jit_level": "O0"})
    rng = np.random.default_rng(3)
    scale = np.array([[126, 129]], np.uint8)                              # ue8m0: 2^-1, 2^2
    emb = rng.standard_normal((8, 16)).astype(ml_dtypes.bfloat16)
    fp8, rows = StoredWeight((4, 256), "fp8", np.float64), StoredWeight((8, 16), "bf16", np.float64, row_lookup=True)
    fp8.set_arrays(codes, scale)
    rows.set_arrays(emb.view(np.uint16), None)

    class Net(nn.Cell):
        def __init__(self):
            super().__init__()
            self.fp8, self.rows = fp8, rows

        def construct(self, x, ids):
            if misuse:                                                   # codes reshaped before the lookup
                return ops.gather(self.fp8.table, self.fp8.weight.reshape((-1,)).astype(ms.int32), 0)
            return self.fp8.dequantized() + x, self.rows.rows(ids)            # + x: exact, one rounding

    class Stub:                                                          # the checkpoint's raw arrays
        formats = {"w.weight": "fp8", "e.weight": "bf16"}
        raw = staticmethod({"w.weight": codes.view(ml_dtypes.float8_e4m3fn),
                            "w.scale": (2.0 ** (scale.astype(np.float64) - 127)).astype(np.float32),
                            "e.weight": emb}.__getitem__)

    x, ids = rng.standard_normal((4, 256)), np.array([5, 0, 7], np.int32)
    ms.export(Net(), Tensor(x), Tensor(ids), file_name=str(tmp_path / "w"), file_format="MINDIR")
    g = read_mindir(str(tmp_path / "w.mindir"))
    ckpt_names = {"fp8.weight": ("w.weight", -1), "fp8.scale": ("w.scale", -1), "rows.weight": ("e.weight", -1)}
    names = {short_name(p): v for p in g.params for k, v in ckpt_names.items() if short_name(p).endswith(k)}
    assert len(names) == (1 if misuse else 3), list(g.params)
    model = lower_mindir(g, WeightTable(Stub(), names), ["x", "ids"], ["y", "r"][:1 if misuse else 2], "w")
    ref = [o.asnumpy() for o in Net()(Tensor(x), Tensor(ids))]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x, "ids": ids})
    return {t.name: onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}, got, ref


def test_stored_weight_lookups_lower_to_typed_initializers(tmp_path):
    """FP8 codes -> FLOAT8E4M3FN and bf16 bit rows -> BFLOAT16 (the lookups become Casts), exact;
    a weight with a NaN code keeps the uint8 lookup (the table maps it to 0), still exact; codes
    read by anything but a lookup are refused."""
    from graph_compile.emit import LoweringError
    codes = np.random.default_rng(4).integers(0, 0x7F, (4, 256)).astype(np.uint8)
    codes[::2] |= 0x80                                                    # negative values too
    for nan_code, want in ((False, "FLOAT8E4M3FN"), (True, "UINT8")):
        c = codes.copy()
        if nan_code:
            c[1, 3] = 0x7F
        types, got, ref = _stored_weight_net(tmp_path, c)
        assert (types["w.weight"], types["w.scale"], types["e.weight"]) == (want, "UINT8", "BFLOAT16"), types
        for a, r in zip(got, ref):
            np.testing.assert_array_equal(a, r)
    with pytest.raises(LoweringError, match="only Gather and the lookup Cast"):
        _stored_weight_net(tmp_path, codes, misuse=True)


@pytest.fixture(scope="module")
def onnx_models():
    folder, manifest, _ = compiled_tiny()
    return folder, manifest, {n: onnx.load(os.path.join(folder, g["onnx"])) for n, g in manifest["graphs"].items()}


def test_checker_and_strict_shape_inference(onnx_models):
    _, _, models = onnx_models
    for m in models.values():
        onnx.checker.check_model(m, full_check=True)
        onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True, data_prop=True)
        assert {o.domain: o.version for o in m.opset_import}[""] == 21


# ONNX type of each checkpoint format in a storage-format graph (scales: their ue8m0 exponent bytes)
STORED_TYPES = {"fp8": "FLOAT8E4M3FN", "fp4": "UINT8", "bf16": "BFLOAT16", "fp32": "FLOAT", "int": "INT32"}


def test_initializers_are_the_checkpoint_bytes_and_sized(onnx_models):
    """Weights in checkpoint format: every initializer of a checkpoint tensor has its format's type
    and exactly its bytes (FP8 codes as FLOAT8E4M3FN, FP4 packed two per byte, bf16, ue8m0 scale
    bytes), and each graph's file is within 10% of the checkpoint's bytes."""
    from ascend_v4.checkpoint import open_checkpoint
    from ascend_v4.weights import e8m0_bytes
    folder, manifest, models = onnx_models
    assert manifest["weight_storage"] == "checkpoint"
    ckpt = open_checkpoint(os.path.join(folder, "checkpoint"))
    cfg = ckpt.config
    for name, m in models.items():
        inits = {t.name: t for t in m.graph.initializer}
        fp8 = [t for t in inits.values() if t.data_type == onnx.TensorProto.FLOAT8E4M3FN]
        # per layer: wq_a wq_b wkv wo_b + shared w1 w2 w3; indexer wq_b on ratio-4 layers
        assert len(fp8) == cfg.n_layers * 7 + sum(r == 4 for r in cfg.compress_ratios[:cfg.n_layers])
        assert sum(len(t.raw_data) for t in fp8) == manifest["graphs"][name]["weights"]["fp8_bytes"]
        assert not any(t.data_type == onnx.TensorProto.DOUBLE for t in inits.values())
        checked = set()
        for ckpt_name in ckpt.schema:
            stack = ckpt_name.split(".experts.")
            key = ckpt_name if len(stack) == 1 or "shared" in ckpt_name else \
                stack[0] + ".experts." + stack[1].split(".", 1)[1]
            if key not in inits:
                continue
            t = inits[key]
            kind = ckpt.formats.get(ckpt_name[: -len(".scale")] + ".weight") if ckpt_name.endswith(".scale") \
                else ckpt.formats[ckpt_name]
            want = "UINT8" if ckpt_name.endswith(".scale") else STORED_TYPES[kind]
            assert onnx.TensorProto.DataType.Name(t.data_type) == want, (key, kind)
            raw = np.asarray(ckpt.raw(ckpt_name))
            raw = e8m0_bytes(raw) if ckpt_name.endswith(".scale") else raw
            if kind == "fp32":
                raw = raw.astype(np.float32)
            stored = np.frombuffer(t.raw_data, np.uint8).reshape(tuple(t.dims[:-1]) + (-1,))
            if key != ckpt_name:                                  # stacked experts: slot e
                stored = stored[int(stack[1].split(".", 1)[0])]
            np.testing.assert_array_equal(stored.reshape(-1), raw.view(np.uint8).reshape(-1), err_msg=key)
            checked.add(kind)
        assert {"fp8", "fp4", "bf16"} <= checked
        # the initializers are exactly the checkpoint tensors the graph holds (all but the MTP layer's)
        assert sum(len(t.raw_data) for t in inits.values()) == \
            sum(np.asarray(ckpt.raw(n)).nbytes for n in ckpt.schema if not n.startswith("mtp."))
        size = manifest["graphs"][name]["onnx_bytes"]
        assert size == os.path.getsize(os.path.join(folder, manifest["graphs"][name]["onnx"]))
        assert abs(size / manifest["checkpoint_bytes"] - 1) <= 0.10, (name, size, manifest["checkpoint_bytes"])
    assert ckpt.formats["layers.2.ffn.experts.5.w2.weight"] == "fp4"


def test_boundary_functions(onnx_models):
    _, _, models = onnx_models
    for m in models.values():
        calls = [n for n in m.graph.node if n.domain == "ascend_v4"]
        counts = {op: sum(n.op_type == op for n in calls) for op in
                  ("sinkhorn_mhc", "sparse_attention", "moe_dispatch_combine")}
        assert counts == {"sinkhorn_mhc": 8, "sparse_attention": 4, "moe_dispatch_combine": 4}
        funcs = {(f.domain, f.name, f.overload): f for f in m.functions}
        assert len(funcs) == 16
        for n in calls:
            f = funcs[(n.domain, n.op_type, n.overload)]
            assert list(f.input) == list(n.input) and len(f.output) == len(n.output)
            assert {b.domain for b in f.node} == {""}
        # the expert function receives the packed FP4 codes and scale bytes and dequantises inside
        moe = funcs[("ascend_v4", "moe_dispatch_combine", "0")]
        assert {"Gather", "Mul"} <= {b.op_type for b in moe.node}
        assert {"layers.0.ffn.experts.w1.weight", "layers.0.ffn.experts.w1.scale"} <= set(moe.input)
        sink = funcs[("ascend_v4", "sinkhorn_mhc", "0")]
        assert {"Softmax", "Sigmoid", "ReduceSum", "Div"} <= {b.op_type for b in sink.node}


def test_external_data_above_threshold(onnx_models, tmp_path):
    from graph_compile.compiler import _save_onnx
    folder, manifest, models = onnx_models
    entry = manifest["graphs"]["decode_b1"]
    path = str(tmp_path / "decode.onnx")
    info = _save_onnx(models["decode_b1"], path, threshold=1000)
    assert info["external_data"] and os.path.getsize(path + ".data") > 0.9 * info["initializer_bytes"]
    assert os.path.getsize(path) < 0.2 * os.path.getsize(os.path.join(folder, entry["onnx"]))
    onnx.checker.check_model(path, full_check=True)
    from ascend_v4.state import StateSpec
    feeds = {"ids": np.array([[7]], np.int32), "positions": np.array([120], np.int32)}
    spec = StateSpec.from_table(manifest["state"])
    state = dict(zip(["state." + n for n in spec.names], spec.initial(1)))
    assert set(state) == {i.name for i in models["decode_b1"].graph.input if i.name.startswith("state.")}
    outs = [ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {**feeds, **state})
            for p in (path, os.path.join(folder, entry["onnx"]))]
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)


def test_sinkhorn_function_body_matches_kernel_reference(onnx_models):
    """The ONNX function `ascend_v4.sinkhorn_mhc` run alone == custom_ops' numpy reference of the kernel."""
    from onnx import helper
    from custom_ops.sinkhorn_mhc.reference import sinkhorn_mhc_reference
    _, manifest, models = onnx_models
    m = models["decode_b1"]
    call = next(n for n in m.graph.node if n.op_type == "sinkhorn_mhc" and n.overload == "3")
    fn = next(f for f in m.functions if f.name == "sinkhorn_mhc" and f.overload == "3")
    inits = {t.name: t for t in m.graph.initializer}
    feeds_names = [x for x in call.input if x not in inits]
    assert len(feeds_names) == 1                           # mixes; scale and base are weights
    inferred = onnx.shape_inference.infer_shapes(m)
    vi = next(v for v in inferred.graph.value_info if v.name == feeds_names[0])
    mixes_shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    outs = [next(v for v in inferred.graph.value_info if v.name == o) for o in call.output]
    g = helper.make_graph([call], "one_op", [vi], outs, initializer=[inits[x] for x in call.input if x in inits])
    single = helper.make_model(g, opset_imports=list(m.opset_import), functions=[fn], ir_version=m.ir_version)
    onnx.checker.check_model(single, full_check=True)
    mixes = np.random.default_rng(5).standard_normal(mixes_shape) * 3.0
    got = ort.InferenceSession(single.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {feeds_names[0]: mixes})
    scale, base = (onnx.numpy_helper.to_array(inits[x]) for x in call.input if x in inits)
    if scale.shape != (3,):
        scale, base = base, scale
    cfg = manifest["config"]
    ref = sinkhorn_mhc_reference(mixes.reshape(-1, mixes_shape[-1]), scale, base, cfg["hc_mult"],
                                 cfg["hc_sinkhorn_iters"], cfg["hc_eps"])
    ref = {"pre": ref[0], "post": ref[1], "comb": ref[2]}
    matched = set()
    for a in got:
        a = a.reshape(-1, *a.shape[mixes.ndim - 1:])
        hit = [k for k, r in ref.items() if r.shape == a.shape and np.allclose(a, r, rtol=2e-5, atol=2e-6)]
        assert len(hit) == 1, [(k, np.abs(r - a).max()) for k, r in ref.items() if r.shape == a.shape]
        matched.add(hit[0])
    assert matched == {"pre", "post", "comb"}
