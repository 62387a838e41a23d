"""Parity runner: MindSpore (GRAPH_MODE) vs onnxruntime (CPU) vs the numpy oracle.

For one bucket BxS of an artifact folder: prefill a seeded random prompt [B, S] (each row through
the extend graph), then `steps` greedy decode steps (MindSpore's argmax picks the tokens; both backends get the same tokens and each
carries its OWN decode state). Compared per output and per layer (hidden.layers.k):
  onnxruntime vs mindspore   every output of every step (state included)
  mindspore vs oracle        logits and per-layer hidden streams at every position
The first out-of-tolerance entry (earliest step, then lowest layer) names the diverging layer.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from graph_compile.artifacts import ArtifactError, read_manifest, sha256
from graph_compile.metrics import compare, load_tolerances, within


class ParityError(ValueError):
    """Bad parity request (unknown bucket, too many steps, missing graph)."""


# ---- backends ------------------------------------------------------------------------------
class MindSporeBackend:
    """The live model's layerwise graph cells (GRAPH_MODE), same outputs as the exported graphs.

    custom_ops: run the AscendC kernels' CPU twins (RuntimeConfig.custom_ops; float32 only, and the window
    and entry slots become FP8 page pools, so states are not compared in that mode).
    """

    name = "mindspore"

    def __init__(self, checkpoint_dir: str, precision: str, custom_ops: bool = False,
                 weight_storage: str = "checkpoint"):
        from ascend_v4.api import build_model
        from ascend_v4.checkpoint import open_checkpoint
        from graph_compile.capture import GRAPHS, graph_cell
        from graph_compile.compiler import export_runtime
        overrides = {"compute_dtype": "float32", "custom_ops": True} if custom_ops else {"compute_dtype": precision}
        overrides.update(export_runtime(weight_storage))
        self.ckpt = open_checkpoint(checkpoint_dir, overrides=overrides)
        self.model = build_model(self.ckpt)
        self.spec = self.model.spec
        self.nets = {g: graph_cell(self.model.transformer, g) for g in GRAPHS}

    def run(self, graph: str, inputs: List[np.ndarray]) -> List[np.ndarray]:
        from mindspore import Tensor
        return [o.asnumpy() for o in self.nets[graph](*[Tensor(a) for a in inputs])]


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, folder: str, extend_entry: dict, decode_entry: dict, state_table: List[dict]):
        import onnxruntime as ort
        from ascend_v4.state import StateSpec
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.sessions, self.inputs = {}, {}
        self.spec = StateSpec.from_table(state_table)
        for g, entry in (("extend", extend_entry), ("decode", decode_entry)):
            if "onnx" not in entry:
                raise ParityError(f"{folder}: graph {g} has no ONNX file (compile with --format onnx)")
            path = os.path.join(folder, entry["onnx"])
            if not os.path.exists(path):
                raise ParityError(f"{folder}: ONNX file {entry['onnx']} listed in the manifest is missing")
            self.sessions[g] = ort.InferenceSession(path, opts,
                                                    providers=["CPUExecutionProvider"])
            self.inputs[g] = entry["inputs"]

    def run(self, graph: str, inputs: List[np.ndarray]) -> List[np.ndarray]:
        return self.sessions[graph].run(None, dict(zip(self.inputs[graph], inputs)))


def run_sequence(backend, prompt: np.ndarray, tokens: List[np.ndarray], n_layers: int,
                 timings: Optional[dict] = None) -> List[Dict[str, np.ndarray]]:
    """Prefill each row of `prompt` [b, s] with the extend graph (row r from position 0), then
    decode `tokens` (each [b, 1]) for all rows -> named outputs per step (step 0 = prefill:
    logits, H and per-layer streams stacked over the rows, the state after the last row)."""
    b, s = prompt.shape
    names = ["state." + n for n in backend.spec.names]
    state = backend.spec.initial(b)
    i32 = lambda v: np.array(v, np.int32)   # noqa: E731
    t0 = time.perf_counter()
    rows = []
    for r in range(b):
        out = backend.run("extend", [prompt[r:r + 1], i32([r]), i32([0]), i32([s])] + list(state))
        state = out[2:2 + len(names)]
        rows.append(out)
    if timings is not None:
        timings["prefill_s"] = time.perf_counter() - t0
    n = len(names)
    first = {"logits": np.concatenate([o[0] for o in rows]), "H": np.concatenate([o[1] for o in rows])}
    first.update(dict(zip(names, state)))
    first.update({f"hidden.layers.{k}": np.concatenate([o[2 + n + k] for o in rows]) for k in range(n_layers)})
    steps = [first]
    decode_times = []
    for j, tok in enumerate(tokens):
        t0 = time.perf_counter()
        out = backend.run("decode", [tok, i32(np.full(b, s + j))] + list(state))
        decode_times.append(time.perf_counter() - t0)
        state = out[1:1 + n]
        d = {"logits": out[0]}
        d.update(dict(zip(names, state)))
        d.update({f"hidden.layers.{k}": out[1 + n + k] for k in range(n_layers)})
        steps.append(d)
    if timings is not None:
        timings["decode_s"] = decode_times
    return steps


# ---- oracle -------------------------------------------------------------------------------
def oracle_sequence(ckpt, full_ids: np.ndarray, precision: str) -> Dict[str, np.ndarray]:
    """Oracle logits [b, T, vocab] and per-layer streams hidden.layers.k [b, T, n, d] for all
    positions, computed once, in `precision` (float64 artifacts are checked against a float64
    oracle, where every FP8 rounding decision matches)."""
    from ascend_v4.oracle import dequantize, forward_layers
    from ascend_v4.oracle import precision as oracle_precision
    cfg = ckpt.config
    with oracle_precision(precision):
        W = dequantize({name: np.asarray(ckpt.raw(name)) for name in ckpt.schema}, cfg)
        logits, streams = forward_layers(cfg, W, full_ids)
    out = {"logits": logits}
    out.update({f"hidden.layers.{k}": X for k, X in enumerate(streams)})
    return out


# ---- the runner ----------------------------------------------------------------------------
@dataclass
class ParityReport:
    bucket: str
    steps: int
    precision: str
    custom_ops: bool = False
    rows: List[dict] = field(default_factory=list)
    timings: Dict[str, dict] = field(default_factory=dict)
    first_divergence: Optional[dict] = None
    modified_files: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r["ok"] for r in self.rows)

    def to_dict(self) -> dict:
        return {"bucket": self.bucket, "steps": self.steps, "precision": self.precision,
                "mindspore_custom_ops": self.custom_ops,
                "passed": self.passed, "first_divergence": self.first_divergence,
                "modified_files": self.modified_files, "timings": self.timings, "rows": self.rows}


def _layer_of(output: str) -> Optional[int]:
    """hidden.layers.k and state.layers.k.* belong to layer k."""
    for prefix in ("hidden.layers.", "state.layers."):
        if output.startswith(prefix):
            return int(output[len(prefix):].split(".")[0])
    return None


def choose_bucket(manifest: dict, bucket: Optional[str]) -> str:
    buckets = manifest.get("buckets", [])
    if bucket is None:
        if not buckets:
            raise ParityError("the artifact folder lists no buckets")
        return buckets[0]
    if bucket not in buckets:
        raise ParityError(f"unknown bucket {bucket!r}; this folder was compiled for {', '.join(buckets)}")
    return bucket


def run_parity(folder: str, steps: int = 16, bucket: Optional[str] = None, seed: int = 0,
               tolerances: Optional[dict] = None, mindspore_runs=None, custom_ops: bool = False) -> ParityReport:
    """Run the three-way comparison; `mindspore_runs` may pass precomputed (steps, timings) to reuse."""
    from ascend_v4.checkpoint import open_checkpoint
    manifest = read_manifest(folder, verify=False)       # parity needs only the ONNX files + checkpoint
    bucket = choose_bucket(manifest, bucket)
    b, s = (int(x) for x in bucket.split("x"))
    cfg_max = manifest["runtime"]["max_seq_len"]
    if steps < 0 or s + steps > cfg_max:
        raise ParityError(f"--steps {steps}: prompt {s} + steps must stay within max_seq_len {cfg_max}")
    precision = manifest["precision"]
    tol = (tolerances or load_tolerances())["custom_ops" if custom_ops else precision]
    ckpt_dir = manifest["checkpoint"]
    if manifest.get("checkpoint_in_folder"):
        ckpt_dir = os.path.join(folder, ckpt_dir)
    if not os.path.exists(ckpt_dir):
        raise ArtifactError(f"{folder}: checkpoint {ckpt_dir} named in the manifest is missing")
    pre, dec = manifest["graphs"].get(f"extend_{bucket}"), manifest["graphs"].get(f"decode_b{b}")
    if pre is None or dec is None or "state" not in manifest:
        raise ParityError(f"{folder}: graphs for bucket {bucket} are missing from the manifest")
    report = ParityReport(bucket=bucket, steps=steps, precision=precision, custom_ops=custom_ops)
    report.modified_files = [rel for rel, h in manifest.get("files", {}).items() if rel.endswith(".onnx")
                             and os.path.exists(os.path.join(folder, rel))
                             and sha256(os.path.join(folder, rel)) != h]
    n_layers = manifest["config"]["n_layers"]

    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, manifest["config"]["vocab_size"], (b, s)).astype(np.int32)
    if mindspore_runs is None:
        mindspore_runs = mindspore_sequence(ckpt_dir, precision, prompt, steps, n_layers, custom_ops,
                                            manifest.get("weight_storage", "float"))   # older artifacts: float
    ms_steps, ms_timing, tokens = mindspore_runs
    ort_timing: dict = {}
    onnx = OnnxBackend(folder, pre, dec, manifest["state"])
    run_sequence(onnx, prompt, [], n_layers)                               # warm-up
    ort_steps = run_sequence(onnx, prompt, tokens, n_layers, ort_timing)
    report.timings = {"mindspore": _timing_summary(ms_timing), "onnxruntime": _timing_summary(ort_timing)}

    full = np.concatenate([prompt] + tokens, axis=1) if tokens else prompt
    oracle = oracle_sequence(open_checkpoint(ckpt_dir), full, precision)
    for j, (m, o) in enumerate(zip(ms_steps, ort_steps)):
        phase = "prefill" if j == 0 else "decode"
        for out in m:
            if custom_ops and out.startswith("state."):
                continue                                   # FP8 page pools vs dense caches
            _add(report, "onnxruntime_vs_mindspore", phase, j, out, _layer_of(out),
                 compare(o[out], m[out], logits=out == "logits"), tol)
        pos = slice(0, s) if j == 0 else slice(s + j - 1, s + j)
        _add(report, "mindspore_vs_oracle", phase, j, "logits", None,
             compare(m["logits"], oracle["logits"][:, pos.stop - 1], logits=True), tol)
        for k in range(n_layers):
            name = f"hidden.layers.{k}"
            _add(report, "mindspore_vs_oracle", phase, j, name, k, compare(m[name], oracle[name][:, pos]), tol)
    report.first_divergence = _first_divergence(report.rows)
    return report


def mindspore_sequence(ckpt_dir: str, precision: str, prompt: np.ndarray, steps: int, n_layers: int,
                       custom_ops: bool = False, weight_storage: str = "checkpoint"):
    """MindSpore's run: (per-step outputs, timings, greedy tokens [b, 1] fed to each decode step)."""
    ms = MindSporeBackend(ckpt_dir, precision, custom_ops, weight_storage)
    tokens = []
    picked = run_sequence(ms, prompt, [], n_layers)                  # pick the tokens (and warm up)
    logits, state = picked[0]["logits"], [picked[0]["state." + n] for n in ms.spec.names]
    b, s = prompt.shape
    for j in range(steps):
        tok = logits.argmax(-1).reshape(-1, 1).astype(np.int32)
        tokens.append(tok)
        out = ms.run("decode", [tok, np.full(b, s + j, np.int32)] + list(state))
        state, logits = out[1:1 + len(state)], out[0]
    timing: dict = {}
    ms_steps = run_sequence(ms, prompt, tokens, n_layers, timing)
    return ms_steps, timing, tokens


def _timing_summary(t: dict) -> dict:
    dec = t.get("decode_s", [])
    return {"prefill_ms": round(1e3 * t.get("prefill_s", 0.0), 3),
            "decode_median_ms": round(1e3 * float(np.median(dec)), 3) if dec else None}


def _add(report, pair, phase, step, output, layer, metrics, tol):
    ok = within(metrics, tol[pair])
    report.rows.append({"pair": pair, "phase": phase, "step": step, "output": output, "layer": layer,
                        **{k: float(v) for k, v in metrics.items()}, "ok": bool(ok)})


def _first_divergence(rows: List[dict]) -> Optional[dict]:
    bad = [r for r in rows if not r["ok"]]
    if not bad:
        return None
    step = min(r["step"] for r in bad)
    first = [r for r in bad if r["step"] == step]
    layered = [r for r in first if r["layer"] is not None]
    r = min(layered, key=lambda r: (r["layer"], r["pair"])) if layered else first[0]
    where = f"layers.{r['layer']}" if r["layer"] is not None else r["output"]
    return {"layer": where, "pair": r["pair"], "phase": r["phase"], "step": step, "output": r["output"],
            "rel": r["rel"]}


def format_table(report: ParityReport) -> str:
    """Readable summary: worst metrics per (pair, phase, output) over all steps."""
    groups: Dict[tuple, List[dict]] = {}
    for r in report.rows:
        key = (r["pair"], r["phase"], r["output"] if not r["output"].startswith("state.") else "state (all layers)")
        groups.setdefault(key, []).append(r)
    kernels = ", MindSpore with custom operators (float32 kernels)" if report.custom_ops else ""
    lines = [f"bucket {report.bucket}, {report.steps} decode steps, precision {report.precision}{kernels}",
             f"{'pair':<26} {'phase':<8} {'output':<22} {'max_abs':>10} {'max_rel':>10} {'min_cos':>12} "
             f"{'top1':>6} {'ok':>4}"]
    for (pair, phase, out), rs in groups.items():
        top1 = [r["top1"] for r in rs if "top1" in r]
        lines.append(f"{pair:<26} {phase:<8} {out:<22} {max(r['max_abs'] for r in rs):>10.3g} "
                     f"{max(r['rel'] for r in rs):>10.3g} {min(r['cosine'] for r in rs):>12.9f} "
                     f"{(min(top1) if top1 else float('nan')):>6.2f} {'yes' if all(r['ok'] for r in rs) else 'NO':>4}")
    for name, t in report.timings.items():
        lines.append(f"latency {name:<12} prefill {t['prefill_ms']} ms, decode median {t['decode_median_ms']} ms")
    ms, ox = report.timings.get("mindspore"), report.timings.get("onnxruntime")
    if ms and ox and ms["prefill_ms"] and ms["decode_median_ms"]:
        lines.append(f"onnxruntime / mindspore time: prefill {ox['prefill_ms'] / ms['prefill_ms']:.2f}x, "
                     f"decode {ox['decode_median_ms'] / ms['decode_median_ms']:.2f}x")
    if report.modified_files:
        lines.append("NOTE: modified since compile: " + ", ".join(report.modified_files))
    if report.first_divergence:
        d = report.first_divergence
        lines.append(f"FAIL: first divergence at {d['layer']} ({d['pair']}, {d['phase']} step {d['step']}, "
                     f"{d['output']}, rel {d['rel']:.3g})")
    else:
        lines.append("PASS: every output within tolerance")
    return "\n".join(lines)
