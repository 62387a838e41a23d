"""SoC profiles: lookups and aliases, the twin enforcing a profile (UB, vector dtypes) with the SoC named,
every kernel run on every profile its op_host AddConfig claims (against its numpy reference), and the
refusal of a profile a kernel does not claim."""
import ml_dtypes
import numpy as np
import pytest

import custom_ops as co
from custom_ops.kv_pack_fp8.reference import kv_pack_fp8_reference
from custom_ops.moe_dispatch.reference import combine_reference, dispatch_reference
from custom_ops.runtime import KernelRuleError, SocError, call_aot, get_profile, get_soc, soc
from custom_ops.runtime.claims import all_claims, claimed_socs, parse_claims, require_claim
from custom_ops.runtime.soc_profiles import PROFILES, VECTOR_DTYPES, CUBE_DTYPES
from custom_ops.sinkhorn_mhc.reference import sinkhorn_mhc_reference
from custom_ops.sparse_fp8_decode.reference import sparse_fp8_decode_reference

RNG = np.random.default_rng(7)
KERNELS = ("kv_pack_fp8", "moe_combine", "moe_dispatch", "sinkhorn_mhc", "sparse_fp8_decode")


# ---- profiles --------------------------------------------------------------------------------
@pytest.mark.parametrize("alias,name", [("ascend910b", "ascend910b"), ("Ascend910B", "ascend910b"),
                                        ("ASCEND910B2", "ascend910b"), ("Ascend910_93", "ascend910_93"),
                                        ("Ascend910_9392", "ascend910_93"), ("Ascend950PR", "ascend950"),
                                        ("ascend950dt", "ascend950"), (" ascend950 ", "ascend950")])
def test_aliases(alias, name):
    assert get_profile(alias).name == name


def test_unknown_soc_lists_the_known_ones():
    with pytest.raises(SocError, match=r"unknown SoC 'Ascend310P'; known: ascend910b \(Ascend910B.*ascend950"):
        get_profile("Ascend310P")


def test_profiles_facts_and_sources():
    a2, a3, a5 = (PROFILES[n] for n in ("ascend910b", "ascend910_93", "ascend950"))
    assert (a2.ub_bytes, a2.cube_cores, a2.vector_cores) == (196608, 24, 48)
    assert (a3.ub_bytes, a3.cube_cores, a3.vector_cores) == (196608, 24, 48)
    assert (a5.ub_bytes, a5.cube_cores, a5.vector_cores) == (253952, 32, 64)
    assert not a2.fp8_vector_cast and not a3.fp8_vector_cast and a5.fp8_vector_cast
    assert {"mxfp8", "mxfp4", "fp8_e4m3", "hif8"} <= a5.cube_dtypes and not {"mxfp8", "fp8_e4m3"} & a2.cube_dtypes
    assert (a2.default_weights, a2.default_kv_cache, a2.indexer_cache("bf16")) == ("w8a8", "bf16", "int8")
    assert (a5.default_weights, a5.default_kv_cache, a5.indexer_cache("fp8")) == ("native", "fp8", "fp4")
    for p in PROFILES.values():
        assert p.vector_dtypes <= set(VECTOR_DTYPES) and p.cube_dtypes <= set(CUBE_DTYPES)
        for fact in ("ub_bytes", "cube_cores", "vector_cores", "vector_dtypes", "cube_dtypes",
                     "default_weights", "kv_caches"):
            assert len(p.sources.get(fact, "")) > 20, (p.name, fact)
        with pytest.raises(SocError, match=f"--kv-cache fp16: {p.name} has no fp16 KV cache"):
            p.check_kv_cache("fp16")


def test_weight_schemes_follow_the_cube_unit():
    schemes = {"native": {"fp8", "fp4", "bf16", "fp32"}, "w8a8": {"int8", "bf16"}, "mxfp8": {"mxfp8", "fp4"}}
    assert PROFILES["ascend910b"].runnable(schemes) == ["w8a8"]
    assert PROFILES["ascend950"].runnable(schemes) == ["native", "w8a8", "mxfp8"]
    with pytest.raises(SocError, match=r"--weights mxfp8: ascend910_93 cannot run it \(its cube unit has no "
                                       r"mxfp4, mxfp8\); it runs w8a8 \(default w8a8\)"):
        PROFILES["ascend910_93"].check_weights("mxfp8", schemes)


# ---- the twin follows the profile ------------------------------------------------------------
def selftest(mode, x):
    out = np.zeros_like(x)
    call_aot("ascendc_selftest", "SelftestAot", [np.array([mode], np.int32), x], [out])
    return out


@pytest.mark.parametrize("name,shown", [("ascend910b", "Ascend910B"), ("Ascend910_93", "Ascend910_93")])
def test_fp8_cast_refused_on_910_naming_the_soc(name, shown):
    with soc(name):
        assert get_soc().profile == get_profile(name).name
        with pytest.raises(KernelRuleError, match=rf"rule SOC_DTYPE: Cast: dst is fp8_e4m3fn_t, which the "
                                                  rf"vector unit of {shown} does not support"):
            selftest(10, np.arange(64, dtype=np.float32))


def test_fp8_cast_runs_on_950():
    x = (RNG.standard_normal(64) * 100).astype(np.float32)
    with soc("ascend950"):
        out = selftest(10, x)
    np.testing.assert_array_equal(out, np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32))


def test_ub_size_follows_the_profile():
    # selftest mode 1 asks for 200 KiB of queue buffers: over 192 KiB (910), within 248 KiB (950)
    with soc("ascend950"):
        selftest(1, np.arange(64, dtype=np.float32))
    with soc("ascend910_93"), pytest.raises(KernelRuleError, match="over the 196608 bytes of Ascend910_93"):
        selftest(1, np.arange(64, dtype=np.float32))


# ---- claims ----------------------------------------------------------------------------------
def test_claims_come_from_add_config():
    claims = all_claims()
    assert set(claims) == set(KERNELS)
    for kernel, socs in claims.items():
        assert socs == ("ascend910b", "ascend910_93", "ascend950"), kernel


def test_unclaimed_profile_is_refused(tmp_path):
    d = tmp_path / "toy_def.cpp"
    d.write_text('this->AICore().AddConfig("ascend910b");\nthis->AICore().AddConfig("ascend910_93");\n')
    claims = parse_claims(d)
    assert claims == ("ascend910b", "ascend910_93")
    require_claim("toy", claims, "ascend910b")
    require_claim("toy", claims, None)                   # a custom SoC (figures given) is not a profile
    with pytest.raises(SocError, match="toy does not claim SoC ascend950: its op_host AddConfig lists "
                                       "ascend910b, ascend910_93"):
        require_claim("toy", claims, "ascend950")
    d.write_text('this->AICore().AddConfig("ascend310p");\n')
    with pytest.raises(SocError, match="AddConfig names SoC ascend310p with no profile"):
        parse_claims(d)


# ---- every kernel on every profile it claims -------------------------------------------------
def run_sinkhorn():
    mixes = (RNG.standard_normal((37, 24)) * 3).astype(np.float32)
    s, b = RNG.standard_normal(3).astype(np.float32), RNG.standard_normal(24).astype(np.float32)
    for g, r in zip(co.sinkhorn_mhc(mixes, s, b), sinkhorn_mhc_reference(mixes, s, b)):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def run_sparse_decode():
    n, h = 130, 4
    args = dict(q=RNG.standard_normal((2, h, 512)).astype(np.float32),
                cache=co.pack_kv_fp8(RNG.standard_normal((n, 512)).astype(np.float32), 64),
                indices=RNG.integers(-1, n, (2, 20)).astype(np.int32),
                attn_sink=RNG.standard_normal(h).astype(np.float32), softmax_scale=512 ** -0.5)
    for g, r in zip(co.sparse_fp8_decode(**args), sparse_fp8_decode_reference(**args)):
        np.testing.assert_allclose(g, r, atol=2e-5, rtol=1e-5)


def run_kv_pack():
    cache = co.pack_kv_fp8(RNG.standard_normal((128, 512)).astype(np.float32), 64)
    e = (RNG.standard_normal((9, 512)) * 10.0 ** RNG.uniform(-4, 3, (9, 1))).astype(np.float32)
    slots = np.array([3, 70, -1, 127, 0, 64, 5, 3, 100], np.int32)
    np.testing.assert_array_equal(co.kv_pack_fp8(cache, e, slots), kv_pack_fp8_reference(cache, e, slots))


def _moe(t=13, d=300, e=8, k=2):
    x = (RNG.standard_normal((t, d)) * 10).astype(np.float32)
    x[0, :3] = [448, -449, 1e-6]                         # saturating and tiny fp8 codes
    idx = np.stack([RNG.permutation(e)[:k] for _ in range(t)]).astype(np.int32)
    return x, idx, RNG.random((t, k)).astype(np.float32)


def run_dispatch():
    x, idx, w = _moe()
    for fp8 in (False, True):                             # fp8: scalar encode on 910, vector Cast on 950
        r = co.moe_dispatch(x, idx, w, 8, 2, fp8)
        for key, val in dispatch_reference(x, idx, w, 8, 2, fp8).items():
            np.testing.assert_array_equal(getattr(r, key), val, err_msg=key)


def run_combine():
    x, idx, w = _moe()
    r = co.moe_dispatch(x, idx, w, 8, 2)
    eo = r.dequantized() * 2.0
    np.testing.assert_allclose(co.moe_combine(eo, r), combine_reference(eo, r.slot_of, w), atol=1e-4)


RUNS = {"sinkhorn_mhc": run_sinkhorn, "sparse_fp8_decode": run_sparse_decode, "kv_pack_fp8": run_kv_pack,
        "moe_dispatch": run_dispatch, "moe_combine": run_combine}


@pytest.mark.parametrize("kernel,profile", [(k, p) for k in KERNELS for p in claimed_socs(k)])
def test_kernel_on_claimed_profile(kernel, profile):
    with soc(profile) as s:
        assert s.ub_bytes == PROFILES[profile].ub_bytes and s.vector_cores == PROFILES[profile].vector_cores
        RUNS[kernel]()

