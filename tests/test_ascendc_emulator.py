"""The AscendC CPU emulator: every rule raises with the kernel and rule named; numerics of the primitives."""
import ml_dtypes
import numpy as np
import pytest

from custom_ops.runtime import KernelRuleError, call_aot, soc, twin_library_path
from custom_ops.runtime.soc_spec import set_soc


def run(mode, x):
    out = np.zeros_like(x)
    call_aot("ascendc_selftest", "SelftestAot", [np.array([mode], np.int32), x], [out])
    return out


def test_runs_every_block():
    x = np.arange(1024, dtype=np.float32)
    out = run(0, x)
    expect = 2 * x + np.repeat(np.arange(4, dtype=np.float32), 256)   # block b adds b to its quarter
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("mode,rule", [
    (1, "UB_CAPACITY"), (2, "DATACOPY_ALIGN_32B"), (3, "DATACOPY_ALIGN_32B"), (4, "QUEUE_BALANCE"),
    (5, "QUEUE_EMPTY"), (6, "QUEUE_ALLOC"), (7, "EVENT_BALANCE"), (8, "GM_BOUNDS"), (9, "VEC_ALIGN_32B"),
    (15, "EVENT_BALANCE"), (16, "QUEUE_BALANCE"), (17, "QUEUE_FREE"), (10, "SOC_DTYPE"), (19, "DATACOPY_PARAMS"), (20, "PIPE_SYNC"), (21, "PIPE_SYNC"), (22, "PIPE_SYNC"),
    (26, "SHIFT_AMOUNT"),
])
def test_rule_violation_raises(mode, rule):
    with pytest.raises(KernelRuleError, match=rf"^selftest_mode{mode}: rule {rule}: .*\(block 0 of 1\)"):
        run(mode, np.arange(64, dtype=np.float32))


def test_ub_capacity_follows_soc():
    # 200 KiB of queue buffers: over 910B's 192 KiB, fine on a SoC with 256 KiB
    with soc("big", ub_bytes=256 * 1024, vector_cores=4):
        run(1, np.arange(64, dtype=np.float32))
    with pytest.raises(KernelRuleError, match="over the 196608 bytes of Ascend910B"):
        run(1, np.arange(64, dtype=np.float32))


def test_fp8_cast_saturates_and_rounds_like_ml_dtypes():
    vals = np.array([0, 1e-9, 0.00195, 0.0029, 0.5, 1.0625, 1.1875, 15.5, 240, 447, 448, 449, 464, 1e6, -1e6, -3.3],
                    np.float32)
    x = np.concatenate([vals, np.random.default_rng(0).standard_normal(21).astype(np.float32) * 50])
    with soc("fp8soc", ub_bytes=192 * 1024, vector_cores=4, fp8_vector_cast=True):
        out = run(10, x)
    expect = np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
    np.testing.assert_array_equal(out, expect)
    assert out[vals.size - 5] == 448 and out[vals.size - 2] == -448    # 1e6 saturates


def test_bf16_cast_dma_pad_reduce_gather():
    x = (np.random.default_rng(1).standard_normal(37) * 100).astype(np.float32)   # 37: not a multiple of 8
    np.testing.assert_array_equal(run(11, x), x.astype(ml_dtypes.bfloat16).astype(np.float32))
    np.testing.assert_array_equal(run(12, x), x + np.float32(1))
    red = run(13, x)
    np.testing.assert_allclose(red[0], x.astype(np.float64).sum(), rtol=1e-6)
    assert red[1] == x.max()
    np.testing.assert_array_equal(run(14, x), x[::-1])
    np.testing.assert_array_equal(run(18, x)[:16], np.concatenate([x[:8], x[16:24]]))


def test_bitwise_and_shift_on_16_bit_lanes():
    n = 64
    lanes = np.random.default_rng(2).integers(0, 1 << 16, 2 * n, dtype=np.uint64).astype(np.uint16)
    lanes[:8] = [0, 0xFFFF, 0x8000, 0x7FFF, 0xAAAA, 0x5555, 1, 0x8001]
    a, b = lanes[:n], lanes[n:]
    x = lanes.view(np.float32)                                   # the kernel sees 2n raw 16-bit lanes
    out = run(23, x).view(np.uint16)
    np.testing.assert_array_equal(out[:n], a & b)
    np.testing.assert_array_equal(out[n:], a | b)
    out = run(24, x).view(np.int16)                              # int16: arithmetic shifts
    sa, sb = a.view(np.int16), b.view(np.int16)
    keep = ((sa.view(np.uint16) & 0x8000) | ((sa.view(np.uint16) << 3) & 0x7FFF)).astype(np.uint16)
    np.testing.assert_array_equal(out[:n].view(np.uint16), keep)  # the sign bit stays
    assert out[4] == np.uint16(0xD550).view(np.int16)             # the API page's example: 0xAAAA << 3
    np.testing.assert_array_equal(out[n:], sb >> 3)               # sign copied in
    out = run(25, x).view(np.uint16)                              # uint16: logical shifts
    np.testing.assert_array_equal(out[:n], (a << 3).astype(np.uint16))
    np.testing.assert_array_equal(out[n:], b >> 3)


def test_soc_selection_errors():
    with pytest.raises(ValueError, match="unknown SoC 'Ascend999'"):
        set_soc("Ascend999")
    with pytest.raises(ValueError, match="ub_bytes must be a multiple of 32"):
        set_soc("odd", ub_bytes=1000, vector_cores=1)


def test_build_is_cached():
    assert twin_library_path("ascendc_selftest") == twin_library_path("ascendc_selftest")


def test_ascend_build_without_cann_says_what_is_missing(monkeypatch, tmp_path):
    from custom_ops.runtime.ascend_build import build_package
    from custom_ops.runtime.errors import AscendBuildError
    monkeypatch.delenv("ASCEND_HOME_PATH", raising=False)
    with pytest.raises(AscendBuildError, match="ASCEND_HOME_PATH is not set"):
        build_package(tmp_path)
    monkeypatch.setenv("ASCEND_HOME_PATH", str(tmp_path))
    with pytest.raises(AscendBuildError, match="missing: .*msopgen"):
        build_package(tmp_path)


def test_build_hash_follows_sources(tmp_path):
    from custom_ops.runtime.build import _source_hash
    entry, inc = tmp_path / "k_twin.cpp", tmp_path / "inc"
    inc.mkdir()
    entry.write_text("int main() {}\n")
    (inc / "a.h").write_text("// v1\n")
    h1 = _source_hash(entry, [inc], "g++")
    (inc / "a.h").write_text("// v2\n")
    assert _source_hash(entry, [inc], "g++") != h1


def test_two_processes_build_at_once(tmp_path):
    import os
    import subprocess
    import sys
    code = ("import numpy as np; from custom_ops.runtime import call_aot; x = np.arange(64, dtype=np.float32); "
            "o = np.zeros_like(x); call_aot('ascendc_selftest', 'SelftestAot', [np.array([12], np.int32), x], [o]); "
            "assert (o == x + 1).all()")
    env = dict(os.environ, ASCEND_V4_TWIN_BUILD_DIR=str(tmp_path))
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    built = [p.name for p in tmp_path.iterdir()]
    assert len(built) == 1 and built[0].startswith("ascendc_selftest-") and built[0].endswith(".so")
