"""The MindSpore aot bindings (GRAPH_MODE) equal the numpy path of the same CPU twins (bit-exact)."""
import numpy as np
import pytest

ms = pytest.importorskip("mindspore")
from mindspore import Tensor, nn  # noqa: E402

import custom_ops as co  # noqa: E402
from custom_ops import ms_ops  # noqa: E402
from custom_ops.sparse_fp8_decode.binding import NO_EXTRA_CACHE  # noqa: E402


class Ops(nn.Cell):
    def __init__(self):
        super().__init__()
        self.mhc = ms_ops.sinkhorn_mhc_op(4, 20, 1e-6)
        self.dec = ms_ops.sparse_fp8_decode_op(512 ** -0.5)
        self.disp = ms_ops.moe_dispatch_op(16, 4, True)
        self.comb = ms_ops.moe_combine_op()

    def construct(self, mixes, s, b, q, c, i, c2, i2, sink, x, ti, tw):
        d = self.disp(x, ti, tw)
        return self.mhc(mixes, s, b), self.dec(q, c, i, c2, i2, sink), d, self.comb(d[0].astype(ms.float32), d[4], tw)


def test_graph_mode_equals_numpy():
    ms.set_context(mode=ms.GRAPH_MODE)
    rng = np.random.default_rng(7)
    mixes, s, b = rng.standard_normal((37, 24)).astype(np.float32), rng.standard_normal(3).astype(np.float32), \
        rng.standard_normal(24).astype(np.float32)
    cache = co.pack_kv_fp8(rng.standard_normal((300, 512)).astype(np.float32))
    q, sink = rng.standard_normal((2, 8, 512)).astype(np.float32), rng.standard_normal(8).astype(np.float32)
    idx, idx2 = rng.integers(-1, 300, (2, 20)).astype(np.int32), np.full((2, 1), -1, np.int32)
    x, tw = rng.standard_normal((37, 200)).astype(np.float32), rng.random((37, 2)).astype(np.float32)
    ti = rng.integers(0, 16, (37, 2)).astype(np.int32)
    args = [mixes, s, b, q, cache, idx, NO_EXTRA_CACHE, idx2, sink, x, ti, tw]
    mhc, dec, disp, y = Ops()(*[Tensor(a) for a in args])
    for got, want in zip(mhc, co.sinkhorn_mhc(mixes, s, b)):
        np.testing.assert_array_equal(got.asnumpy(), want)
    for got, want in zip(dec, co.sparse_fp8_decode(q, cache, idx, sink, 512 ** -0.5)):
        np.testing.assert_array_equal(got.asnumpy(), want)
    r = co.moe_dispatch(x, ti, tw, 16, 4, fp8=True)
    want = [r.x, r.scales, r.weights, r.token, r.slot_of, r.expert_counts, r.expert_offsets, r.rank_counts,
            r.rank_token_counts]
    for got, w in zip(disp, want):
        np.testing.assert_array_equal(got.asnumpy(), w)
    np.testing.assert_array_equal(y.asnumpy(), co.moe_combine(r.x.astype(np.float32), r))


def test_graph_mode_error_carries_the_twin_message():
    ms.set_context(mode=ms.GRAPH_MODE)
    op = ms_ops.sinkhorn_mhc_op(4, 20, 1e-6)
    with pytest.raises(RuntimeError, match="Return value from CPU AOT kernel"):
        op(Tensor(np.zeros((5, 24), np.float32)), Tensor(np.ones(2, np.float32)), Tensor(np.zeros(24, np.float32)))
    assert ms_ops.last_twin_error("sinkhorn_mhc") == "sinkhorn_mhc: hc_scale must have shape [3], got [2]"
