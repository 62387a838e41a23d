"""SoC profiles: the one owner of per-SoC hardware facts (unified buffer, cores, the data types of
the vector and cube units, the deployment formats a SoC runs), each with its public source.

Read by the AscendC CPU twin (`soc_spec`), the kernels' SoC claims (`claims`), the planner's chips
(`tools/deploy/hardware/*.yaml` name their profile) and `ascend-v4 compile --soc` / `plan --soc`.
Pure Python, no third-party import. Names are the CANN `AddConfig` spellings (`ascend910b`,
`ascend910_93`, `ascend950`); the CANN SoC-version spellings (`Ascend910B`, ...) are aliases.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Mapping, Tuple


class SocError(ValueError):
    """An unknown SoC name, or a format the selected SoC cannot run; the message names both."""


# ---- sources (each fact below cites one of these, or says "assumed") --------------------------
_DTYPES_DOC = ("CANN 9.0 Ascend C API, 'built-in data types' product table "
               "(hiascend.com/document/detail/zh/canncommercial/900/API/ascendcopapi/atlas_ascendc_10_0019.html): "
               "Atlas A2/A3 list int8/uint8/int16/uint16/int32/uint32/int64/uint64, half, bfloat16_t, float, double; "
               "Ascend 950PR/950DT (Atlas 350) add fp8_e4m3fn_t, fp8_e5m2_t, hifloat8_t, fp8_e8m0_t, fp4x2_e2m1_t")
_NO_FP8_A2A3 = ("CANN ops-math Cast README (gitcode.com/cann/ops-math/blob/master/math/cast/README.md): "
                "'Atlas A2/A3: HIFLOAT8, FLOAT8_E5M2, FLOAT8_E4M3FN, FLOAT4_E2M1, FLOAT4_E1M2 not supported'; "
                "aclDataType doc: enums 33-41 (HiF8, FP8, E8M0, FP6, FP4) unsupported on Atlas A2/A3")
_CAST_950 = ("CANN Ascend C API 'Cast (multi-type to float)' (hiascend.com/document/detail/zh/CANNCommunityEdition/"
             "910beta2/API/ascendcopapi/atlasascendc_api_07_0022.html): on Ascend 950PR/950DT converts "
             "fp4x2_e2m1_t, fp4x2_e1m2_t, hifloat8_t, fp8_e5m2_t, fp8_e4m3fn_t, bfloat16_t")
_UB_A2 = ("CANN platform_config Ascend910B2.ini [AICoreSpec] ub_size=196608 (as quoted by public CANN kernel "
          "notes); Catlass include/catlass/arch/arch.hpp: struct AtlasA2 { UB_SIZE = 192 * 1024 }")
_UB_A3 = ("CANN platform_config Ascend910_9392.ini (quoted in public AscendC benchmark prompts): "
          "ai_core_cnt=24, cube_core_cnt=24, vector_core_cnt=48, ub_size=196608 (per die)")
_CORES_A2 = ("CANN platform_config Ascend910B1.ini ai_core_cnt=24 (quoted in public kernel notes); "
             "A2 has 2 AIV per AIC (separated cube/vector cores), so 48 AIV; the 20-core 910B3/B4 have 20/40 "
             "(Catlass acot arch.hpp AscendC910B3: MaxBlock=20, MaxAivBlock=40): pass vector_cores= for them")
_UB_950 = ("CANN platform_config Ascend950PR_957x/958x and Ascend950DT ini: ub_size=253952 (248 KiB), "
           "as quoted by public CANN operator design notes for arch35 (DAV_3510)")
_CORES_950 = ("CANN platform_config 950PR_958b: cube_core_cnt=32, vector_core_cnt=64 (quoted in public "
              "CANN communication-overlap samples for Ascend950PR)")
_CUBE_A2 = ("INT8 and FP16/BF16 matmul on A2/A3: the CANN recipe 'NPU DeepSeek-V4 inference guide' "
            "(hicann/cann-recipes-infer) runs W8A8 INT8 on Atlas A2/A3 and FP8 only on 950; no FP8/FP4 "
            "data types on A2/A3 (aclDataType doc, enums 33-41)")
_CUBE_950 = ("Huawei Connect 2025 keynote (Ascend 950 series): 1 PFLOPS FP8/MXFP8/HiF8, 2 PFLOPS MXFP4; "
             "fp16/bf16/int8 assumed kept from A2/A3")
_RECIPE_910 = ("cann-recipes-infer DeepSeek-V4 guide: Atlas A2/A3 run W8A8 INT8 (routed + shared experts, "
               "wq_b, wo_b, indexer wq_b, MTP projections), BF16 elsewhere, KV cache BF16 (C16) or C8 INT8, "
               "INT8 indexer cache")
_RECIPE_950 = ("cann-recipes-infer DeepSeek-V4 guide (950 rows): FP8 weights kept with FP4 experts as MXFP4, "
               "or Hybrid MXFP8-MXFP4; FP8 KV cache. Indexer keys FP4 (the release's simulation), assumed "
               "stored packed e2m1 as the planner does")


# ---- vocabularies ------------------------------------------------------------------------------
# Vector-unit dtypes (names the twin also uses: twin/soc_spec.h VectorDtype).
VECTOR_DTYPES = ("fp32", "fp16", "bf16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64",
                 "fp8_e4m3", "fp8_e5m2", "hif8", "fp4_e2m1")
# Cube-unit input dtypes. mxfp8 / mxfp4: e4m3 / e2m1 codes with one e8m0 scale per 1x32 block.
CUBE_DTYPES = ("fp16", "bf16", "fp32", "int8", "fp8_e4m3", "fp8_e5m2", "hif8", "mxfp8", "mxfp4")
# Weight formats of the planner's schemes (tools/deploy/model_stats.SCHEMES) -> the cube input they
# need (None: not a matmul operand, e.g. fp32 norms, int32 tables). The release's FP4 experts carry
# ue8m0 scales per 1x32, which is MXFP4. INT4 weights (W4A8) take INT8 activations: the int8 cube
# input (torch_npu npu_quant_matmul / npu_grouped_matmul on A2/A3 carry int4 weights packed in int32).
WEIGHT_FORMAT_CUBE = {"bf16": "bf16", "int8": "int8", "int4": "int8", "fp8": "fp8_e4m3", "mxfp8": "mxfp8",
                      "fp4": "mxfp4", "fp32": None, "int32": None}


@dataclass(frozen=True)
class SocProfile:
    """One SoC. Figures are per die (one HCCL rank); `sources[field]` says where each comes from."""
    name: str                         # CANN AddConfig spelling, e.g. "ascend910b"
    cann_name: str                    # CANN SoC version family, e.g. "Ascend910B" (the twin's display name)
    aliases: Tuple[str, ...]
    product: str
    ub_bytes: int                     # Unified Buffer per vector core (AIV), bytes
    cube_cores: int                   # AIC per die
    vector_cores: int                 # AIV per die (a kernel's blockDim is planned for these)
    vector_dtypes: FrozenSet[str]
    cube_dtypes: FrozenSet[str]
    default_weights: str              # planner --weights scheme the SoC deploys by default
    kv_caches: Tuple[Tuple[str, str], ...]   # (KV cache format, indexer cache format); first = default
    sources: Mapping[str, str] = field(default_factory=dict)

    # ---- derived -------------------------------------------------------------------------------
    @property
    def fp8_vector_cast(self) -> bool:
        """The vector unit converts to/from fp8 e4m3 (our kernels' `fp8VectorCast` tiling flag)."""
        return "fp8_e4m3" in self.vector_dtypes

    @property
    def default_kv_cache(self) -> str:
        return self.kv_caches[0][0]

    def indexer_cache(self, kv_cache: str) -> str:
        return dict(self.kv_caches)[self.check_kv_cache(kv_cache)]

    def missing_cube(self, weight_formats: Iterable[str]) -> List[str]:
        """The cube inputs (CUBE_DTYPES names) these weight formats need and this SoC lacks."""
        need = {WEIGHT_FORMAT_CUBE[f] for f in weight_formats} - {None}
        return sorted(need - self.cube_dtypes)

    def runnable(self, schemes: Mapping[str, Iterable[str]]) -> List[str]:
        """The schemes (name -> weight formats) whose every matmul input this cube unit has."""
        return [name for name, fmts in schemes.items() if not self.missing_cube(fmts)]

    def check_weights(self, scheme: str, schemes: Mapping[str, Iterable[str]]) -> str:
        """`scheme` if this SoC runs it (see `runnable`), else SocError naming what the cube lacks."""
        if scheme not in schemes:
            raise SocError(f"--weights {scheme!r}: expected one of {', '.join(schemes)}")
        missing = self.missing_cube(schemes[scheme])
        if missing:
            raise SocError(f"--weights {scheme}: {self.name} cannot run it (its cube unit has no "
                           f"{', '.join(missing)}); it runs {', '.join(self.runnable(schemes))} "
                           f"(default {self.default_weights})")
        return scheme

    def check_kv_cache(self, kv_cache: str) -> str:
        known = [k for k, _ in self.kv_caches]
        if kv_cache not in known:
            raise SocError(f"--kv-cache {kv_cache}: {self.name} has no {kv_cache} KV cache; "
                           f"it runs {', '.join(known)} (default {self.default_kv_cache})")
        return kv_cache

    def matrix(self, schemes: Mapping[str, Iterable[str]]) -> Dict[str, object]:
        """The feature-matrix row (JSON-friendly) with its sources; `schemes` as for `runnable`."""
        return {"name": self.name, "cann_name": self.cann_name, "aliases": list(self.aliases),
                "product": self.product, "ub_bytes": self.ub_bytes, "cube_cores": self.cube_cores,
                "vector_cores": self.vector_cores, "vector_dtypes": sorted(self.vector_dtypes, key=VECTOR_DTYPES.index),
                "cube_dtypes": sorted(self.cube_dtypes, key=CUBE_DTYPES.index),
                "default_weights": self.default_weights, "runs_weights": self.runnable(schemes),
                "kv_caches": {k: {"indexer_cache": i} for k, i in self.kv_caches},
                "sources": dict(self.sources)}


_A2A3_VECTOR = frozenset({"fp32", "fp16", "bf16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64"})
_A2A3_CUBE = frozenset({"fp16", "bf16", "fp32", "int8"})
_910_SOURCES = {"vector_dtypes": _DTYPES_DOC + "; " + _NO_FP8_A2A3,
                "cube_dtypes": _CUBE_A2 + "; fp32 operands: assumed (Mmad float inputs)",
                "default_weights": _RECIPE_910, "kv_caches": _RECIPE_910}

PROFILES: Dict[str, SocProfile] = {p.name: p for p in (
    SocProfile("ascend910b", "Ascend910B", ("Ascend910B", "Ascend910B1", "Ascend910B2"),
               "Ascend 910B (Atlas A2: 800I/800T A2)", 192 * 1024, 24, 48, _A2A3_VECTOR, _A2A3_CUBE,
               "w8a8", (("bf16", "int8"), ("int8", "int8")),
               {"ub_bytes": _UB_A2, "cube_cores": _CORES_A2, "vector_cores": _CORES_A2, **_910_SOURCES}),
    SocProfile("ascend910_93", "Ascend910_93", ("Ascend910_93", "Ascend910_9391", "Ascend910_9392", "Ascend910C"),
               "Ascend 910C (Atlas A3, CloudMatrix384); figures per die", 192 * 1024, 24, 48,
               _A2A3_VECTOR, _A2A3_CUBE, "w8a8", (("bf16", "int8"), ("int8", "int8")),
               {"ub_bytes": _UB_A3, "cube_cores": _UB_A3, "vector_cores": _UB_A3, **_910_SOURCES}),
    SocProfile("ascend950", "Ascend950", ("Ascend950", "Ascend950PR", "Ascend950DT"),
               "Ascend 950PR / 950DT (Atlas 950 SuperPoD, Atlas 350)", 253952, 32, 64,
               _A2A3_VECTOR | {"fp8_e4m3", "fp8_e5m2", "hif8", "fp4_e2m1"},
               _A2A3_CUBE | {"fp8_e4m3", "fp8_e5m2", "hif8", "mxfp8", "mxfp4"},
               "native", (("fp8", "fp4"), ("bf16", "int8")),
               {"ub_bytes": _UB_950, "cube_cores": _CORES_950, "vector_cores": _CORES_950,
                "vector_dtypes": _DTYPES_DOC + "; " + _CAST_950,
                "cube_dtypes": _CUBE_950, "default_weights": _RECIPE_950,
                "kv_caches": _RECIPE_950 + "; bf16 KV with INT8 indexer cache: assumed (the 910 layout)"}),
)}
DEFAULT = "ascend910b"
_BY_ALIAS = {a.lower(): p for p in PROFILES.values() for a in (p.name, *p.aliases)}


def known() -> str:
    """'ascend910b (Ascend910B, ...), ...' for error messages."""
    return "; ".join(f"{p.name} ({', '.join(p.aliases)})" for p in PROFILES.values())


def get_profile(name: str) -> SocProfile:
    """The profile of `name` (profile name or a CANN alias, any case); SocError lists the known ones."""
    prof = _BY_ALIAS.get(str(name).strip().lower())
    if prof is None:
        raise SocError(f"unknown SoC {name!r}; known: {known()}")
    return prof
