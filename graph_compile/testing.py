"""A compiled tiny artifact folder shared by the graph-compiler tests (one compile per process).

tiny with FP8 linears and FP4 experts, float64 graphs, bucket 1x120: extend 120 tokens, then
16 decode steps cross ratio-4 boundaries every 4 tokens and the ratio-128 boundary at 127.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import time

BUCKET = "1x120"
STEPS = 16


@functools.lru_cache(maxsize=None)
def compiled_tiny() -> tuple:
    """-> (artifact folder, manifest, compile seconds)."""
    from graph_compile.compiler import compile_model
    from tools.cmd_compile import _soc_formats        # what `ascend-v4 compile` records by default
    root = tempfile.mkdtemp(prefix="ascend_v4_gc_")
    atexit.register(shutil.rmtree, root, True)
    t0 = time.perf_counter()
    manifest = compile_model(f"{root}/tiny", BUCKET, "onnx,mindir", preset="tiny", precision="float64",
                             soc_formats=_soc_formats("ascend910b"), log=lambda m: None)
    return f"{root}/tiny", manifest, time.perf_counter() - t0


@functools.lru_cache(maxsize=None)
def mindspore_run() -> tuple:
    """MindSpore's reference run of the shared artifact (reused by the mutated-graph test)."""
    import os
    import numpy as np
    from graph_compile.parity import mindspore_sequence
    folder, manifest, _ = compiled_tiny()
    b, s = (int(x) for x in BUCKET.split("x"))
    prompt = np.random.default_rng(0).integers(0, manifest["config"]["vocab_size"], (b, s)).astype(np.int32)
    return mindspore_sequence(os.path.join(folder, "checkpoint"), "float64", prompt, STEPS,
                              manifest["config"]["n_layers"], weight_storage=manifest["weight_storage"])
