"""`compile_model`: checkpoint -> artifact folder with MindIR and ONNX graphs per shape bucket.

Per bucket BxS: an extend graph (S tokens of one sequence into a state of B rows: prefill chunks,
verification) and, per batch size, a decode graph (one token per row at per-row positions). The
state inputs and outputs are named by the model's state spec, recorded in the manifest. Each graph is exported once from the model's cells to MindIR (with the
operator-boundary markers, capture.py); the ONNX file is lowered from that same MindIR.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from graph_compile.artifacts import staging_folder, write_manifest
from graph_compile.capture import Bucket, export_mindir, graph_cell, io_names, boundary_markers
from graph_compile.lower import OPSET

FORMATS = ("onnx", "mindir")
PRECISIONS = ("float32", "float64")
DEFAULT_EXTERNAL_THRESHOLD = 1 << 30     # bytes of initializers above which ONNX uses external data


class CompileError(ValueError):
    """Bad compile options (format, precision, model source)."""


# The runtime of exported graphs: weights in checkpoint format, dequantised in the graph at use
# (the MindIR parameters and ONNX initializers are the checkpoint's bytes, graph_compile/weights.py),
# and the composite chains (portable primitives, no fused CPU kernels). `weight_storage` 'float'
# (dequantised weights) stays available for verification. The parity runner builds its live model
# the same way, with the manifest's weight_storage.
WEIGHT_STORAGES = ("checkpoint", "float")
EXPORT_RUNTIME = {"weight_storage": "checkpoint", "kernels": "composite"}


def export_runtime(weight_storage: str = "checkpoint") -> Dict[str, str]:
    """Runtime overrides of an exported graph (and of the parity runner's live model)."""
    if weight_storage not in WEIGHT_STORAGES:
        raise CompileError(f"unknown weight storage {weight_storage!r}; choose from {', '.join(WEIGHT_STORAGES)}")
    return {**EXPORT_RUNTIME, "weight_storage": weight_storage}


def checkpoint_bytes(ckpt_dir: str) -> int:
    """Bytes of the checkpoint's tensor files (*.safetensors)."""
    return sum(os.path.getsize(os.path.join(ckpt_dir, f)) for f in os.listdir(ckpt_dir)
               if f.endswith(".safetensors"))


def parse_formats(spec: str) -> List[str]:
    fmts = [f.strip().lower() for f in spec.split(",") if f.strip()]
    bad = [f for f in fmts if f not in FORMATS]
    if bad or not fmts:
        raise CompileError(f"unknown format {', '.join(bad) or repr(spec)}; choose from {', '.join(FORMATS)}")
    return fmts


def prepare_checkpoint(preset: Optional[str], checkpoint: Optional[str], workdir: str,
                       weight_format: Optional[str], seed: int) -> str:
    """The checkpoint folder to compile: the given one, or random weights for a preset in `workdir`."""
    from ascend_v4.api import MAX_RANDOM_PARAMS
    from ascend_v4.checkpoint import write_random_checkpoint
    from ascend_v4.config import load_config
    from ascend_v4.params import count_params
    if (preset is None) == (checkpoint is None):
        raise CompileError("give exactly one of --preset NAME or --checkpoint DIR")
    if checkpoint is not None:
        if not os.path.exists(checkpoint):
            raise CompileError(f"checkpoint {checkpoint} does not exist")
        return os.path.abspath(checkpoint)
    cfg = load_config(preset)
    if count_params(cfg)["total"] > MAX_RANDOM_PARAMS:
        raise CompileError(f"preset {preset!r} is too large for random weights; pass --checkpoint DIR")
    return write_random_checkpoint(cfg, os.path.join(workdir, "checkpoint"),
                                   weight_format=weight_format or cfg.dtype, seed=seed)


def _tool_versions() -> Dict[str, str]:
    import mindspore
    import onnx
    import onnxruntime
    return {"mindspore": mindspore.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def _save_onnx(model, path: str, threshold: int) -> Dict[str, object]:
    import onnx
    init_bytes = sum(len(t.raw_data) for t in model.graph.initializer)
    external = init_bytes > threshold
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(path) + ".data", size_threshold=1024)
    else:
        onnx.save_model(model, path)
    return {"external_data": external, "initializer_bytes": init_bytes}


def graph_name(graph: str, bucket: Bucket) -> str:
    return f"extend_{bucket.name}" if graph == "extend" else f"decode_b{bucket.batch}"


def compile_graph(ckpt, transformer, graph: str, bucket: Bucket, folder: str, formats: Sequence[str],
                  external_threshold: int) -> Dict[str, object]:
    """Export one graph to MindIR and lower it to ONNX; returns its manifest entry."""
    import onnx
    from graph_compile.boundaries import expected_instances
    from graph_compile.mindir import read_mindir
    from graph_compile.lower import lower_mindir
    from graph_compile.weights import WeightTable, param_name_table
    name = graph_name(graph, bucket)
    inputs, outputs = io_names(transformer, graph)
    entry: Dict[str, object] = {"graph": graph, "batch": bucket.batch,
                                "seq": bucket.seq if graph == "extend" else 1,
                                "inputs": inputs, "outputs": outputs}
    t0 = time.perf_counter()
    mindir = export_mindir(transformer, graph, bucket, os.path.join(folder, name))
    entry["mindir_export_s"] = round(time.perf_counter() - t0, 2)
    if "mindir" in formats:
        entry["mindir"] = os.path.basename(mindir)
        entry["mindir_bytes"] = os.path.getsize(mindir)
    if "onnx" in formats:
        t0 = time.perf_counter()
        table = transformer.checkpoint_parameters()
        with boundary_markers(transformer):
            weights = WeightTable(ckpt, param_name_table(graph_cell(transformer, graph), table))
        model = lower_mindir(read_mindir(mindir), weights, inputs, outputs, name,
                             expected_instances(ckpt.config, graph))
        onnx.checker.check_model(model, full_check=True)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
        path = os.path.join(folder, name + ".onnx")
        entry.update(_save_onnx(model, path, external_threshold))
        entry["onnx"] = os.path.basename(path)
        entry["onnx_bytes"] = sum(os.path.getsize(p) for p in (path, path + ".data") if os.path.exists(p))
        entry["onnx_lowering_s"] = round(time.perf_counter() - t0, 2)
        entry["weights"] = weights.stats
        entry["functions"] = sorted({f"{f.domain}.{f.name}" for f in model.functions})
        entry["n_function_instances"] = len(model.functions)
    if "mindir" not in formats:
        os.remove(mindir)
    return entry


def compile_model(out: str, buckets_spec: str, formats_spec: str = "onnx,mindir",
                  preset: Optional[str] = None, checkpoint: Optional[str] = None,
                  precision: str = "float32", weight_format: Optional[str] = None, seed: int = 0,
                  external_threshold: int = DEFAULT_EXTERNAL_THRESHOLD, overwrite: bool = False,
                  soc_formats: Optional[dict] = None, weight_storage: str = "checkpoint", log=print) -> dict:
    """Compile the model to `out` (atomically); returns the manifest. `soc_formats`: the formats the
    target SoC picks (`tools.deploy.formats.Formats.to_dict()`), recorded as the manifest's `soc`.
    `weight_storage`: 'checkpoint' (weights as stored, dequantised in the graph) or 'float'."""
    from ascend_v4.api import build_model
    from ascend_v4.checkpoint import open_checkpoint
    from graph_compile.buckets import parse_buckets
    formats = parse_formats(formats_spec)
    if precision not in PRECISIONS:
        raise CompileError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    runtime = export_runtime(weight_storage)
    if checkpoint is not None and not os.path.exists(checkpoint):
        raise CompileError(f"checkpoint {checkpoint} does not exist")
    t_start = time.perf_counter()
    with staging_folder(out, overwrite) as tmp:
        ckpt_dir = prepare_checkpoint(preset, checkpoint, tmp, weight_format, seed)
        ckpt = open_checkpoint(ckpt_dir, overrides={"compute_dtype": precision, **runtime})
        if ckpt.config.has_engram:
            raise CompileError("graph export of Engram models (engram_layer_ids) is not built: their "
                               "graphs take host-fetched table rows (ascend_v4/engram.py)")
        buckets = parse_buckets(buckets_spec, ckpt.runtime)
        model = build_model(ckpt)
        graphs: Dict[str, dict] = {}
        for bucket in buckets:
            log(f"extend {bucket.name} ...")
            graphs[graph_name("extend", bucket)] = compile_graph(ckpt, model.transformer, "extend", bucket,
                                                                 tmp, formats, external_threshold)
            if f"decode_b{bucket.batch}" not in graphs:
                log(f"decode batch {bucket.batch} ...")
                graphs[f"decode_b{bucket.batch}"] = compile_graph(ckpt, model.transformer, "decode", bucket,
                                                                  tmp, formats, external_threshold)
        in_folder = os.path.abspath(ckpt_dir).startswith(os.path.abspath(tmp))
        manifest = {
            "format_version": 1,
            "model": ckpt.config.name,
            "config": ckpt.config.to_dict(),
            "runtime": ckpt.runtime.to_dict(),
            "checkpoint": "checkpoint" if in_folder else ckpt_dir,
            "checkpoint_in_folder": in_folder,
            "weight_format": ckpt.weight_format,
            "weight_storage": weight_storage,
            "checkpoint_bytes": checkpoint_bytes(ckpt_dir),
            "soc": soc_formats,
            "precision": precision,
            "buckets": [b.name for b in buckets],
            "state": model.spec.table(),
            "formats": formats,
            "opset": OPSET,
            "onnx_domain": "ascend_v4",
            "graphs": graphs,
            "compile_seconds": round(time.perf_counter() - t_start, 2),
            "tool_versions": _tool_versions(),
        }
        manifest = write_manifest(tmp, manifest)
    return manifest
