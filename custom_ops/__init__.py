"""AscendC custom operators for DeepSeek-V4 with CPU twins.

numpy entry points (run the CPU twin of the same op_kernel/*.cpp source):
  sinkhorn_mhc, pack_kv_fp8, kv_pack_fp8, sparse_fp8_decode, moe_dispatch, moe_combine.
MindSpore cells (ops.Custom aot): custom_ops.ms_ops (imported lazily; it imports mindspore).
"""
from custom_ops.kv_pack_fp8.binding import kv_pack_fp8
from custom_ops.moe_combine.binding import moe_combine
from custom_ops.moe_dispatch.binding import DispatchResult, moe_dispatch
from custom_ops.runtime import KernelRuleError, TwinBuildError, set_soc, soc
from custom_ops.sinkhorn_mhc.binding import sinkhorn_mhc
from custom_ops.sparse_fp8_decode.binding import sparse_fp8_decode
from custom_ops.sparse_fp8_decode.reference import pack_kv_fp8, unpack_kv_fp8

__all__ = ["sinkhorn_mhc", "pack_kv_fp8", "kv_pack_fp8", "unpack_kv_fp8", "sparse_fp8_decode", "moe_dispatch", "moe_combine",
           "DispatchResult", "KernelRuleError", "TwinBuildError", "set_soc", "soc"]
