"""Build path for the real custom-op package with the CANN toolkit (msopgen project + cmake build.sh).

Untested here (no CANN toolkit on this machine): it stops with AscendBuildError saying what is missing.
Steps: msopgen generates a custom-op project for the SoC; our op_host/*.h, op_host/*_def.cpp and
op_kernel/*.cpp replace the generated stubs; the project's build.sh compiles the kernels with the AscendC
compiler and packs custom_opp_*.run, which installs under $ASCEND_OPP_PATH/vendors.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from custom_ops.runtime.errors import AscendBuildError

ROOT = Path(__file__).resolve().parent.parent
OPS = {  # op folder -> (OpType, inputs, outputs) for msopgen's op description
    "sinkhorn_mhc": ("SinkhornMhc", [("mixes", "float"), ("hc_scale", "float"), ("hc_base", "float")],
                     [("pre", "float"), ("post", "float"), ("comb", "float")]),
    "sparse_fp8_decode": ("SparseFp8Decode", [("q", "float"), ("cache", "uint8"), ("indices", "int32"),
                                              ("extra_cache", "uint8"), ("extra_indices", "int32"), ("attn_sink", "float")],
                          [("out", "float"), ("lse", "float")]),
    "moe_dispatch": ("MoeDispatch", [("x", "float"), ("topk_idx", "int32"), ("topk_weights", "float")],
                     [("recv_x", "float"), ("recv_scale", "uint8"), ("recv_weights", "float"), ("recv_token", "int32"),
                      ("slot_of", "int32"), ("expert_counts", "int32"), ("expert_offsets", "int32"),
                      ("rank_counts", "int32"), ("rank_token_counts", "int32")]),
    "moe_combine": ("MoeCombine", [("expert_out", "float"), ("slot_of", "int32"), ("topk_weights", "float")],
                    [("y", "float")]),
    "kv_pack_fp8": ("KvPackFp8", [("cache", "uint8"), ("entries", "float"), ("slots", "int32")],
                    [("out", "uint8")]),
}


def check_toolkit() -> Path:
    """$ASCEND_HOME_PATH with msopgen and cmake, or AscendBuildError naming what is missing."""
    home = os.environ.get("ASCEND_HOME_PATH")
    if not home:
        raise AscendBuildError("ASCEND_HOME_PATH is not set: building the Ascend custom-op package needs the CANN "
                               "toolkit (source <cann>/set_env.sh), which provides msopgen, the AscendC compiler "
                               "and the op_host headers (register/op_def_registry.h, tiling/platform/platform_ascendc.h)")
    home_p = Path(home)
    missing = [str(p) for p in [home_p / "python/site-packages/bin/msopgen", home_p / "include"] if not p.exists()]
    if shutil.which("cmake") is None:
        missing.append("cmake on PATH")
    if missing:
        raise AscendBuildError(f"the CANN toolkit at {home} is incomplete; missing: {', '.join(missing)}")
    return home_p


def op_description(op: str) -> list[dict]:
    op_type, ins, outs = OPS[op]
    port = lambda name, dt: {"name": name, "param_type": "required", "format": ["ND"], "type": [dt]}  # noqa: E731
    return [{"op": op_type, "input_desc": [port(*i) for i in ins], "output_desc": [port(*o) for o in outs]}]


def build_package(out_dir: str | Path, soc: str = "ascend910b", ops=tuple(OPS)) -> list[Path]:
    """Generate, fill and build one custom-op project per operator for SoC `soc` (a profile name or
    CANN alias; every op must claim it in its op_host AddConfig); returns the .run packages."""
    from custom_ops.runtime.claims import claimed_socs, require_claim
    from custom_ops.runtime.soc_profiles import get_profile
    soc = get_profile(soc).name
    for op in ops:
        require_claim(op, claimed_socs(op), soc)
    home = check_toolkit()
    msopgen = home / "python/site-packages/bin/msopgen"
    out_dir = Path(out_dir)
    runs = []
    for op in ops:
        proj = out_dir / op
        desc = out_dir / f"{op}.json"
        out_dir.mkdir(parents=True, exist_ok=True)
        desc.write_text(json.dumps(op_description(op), indent=2))
        subprocess.run([str(msopgen), "gen", "-i", str(desc), "-c", f"ai_core-{soc}", "-lan", "cpp", "-out", str(proj)],
                       check=True)
        stub = proj / "op_host" / f"{op}.cpp"          # msopgen's generated definition; ours is {op}_def.cpp
        if stub.exists():
            stub.unlink()
        for sub in ("op_host", "op_kernel"):
            for f in (ROOT / op / sub).iterdir():
                shutil.copy2(f, proj / sub / f.name)
        for f in (ROOT / "common" / "op_kernel").iterdir():    # kernel headers shared by the ops
            shutil.copy2(f, proj / "op_kernel" / f.name)
        # the op_host tiling headers include the AscendC CPU twin only under ASCENDC_CPU_TWIN
        subprocess.run(["bash", "build.sh"], cwd=proj, check=True)
        runs += sorted((proj / "build_out").glob("custom_opp_*.run"))
    return runs
