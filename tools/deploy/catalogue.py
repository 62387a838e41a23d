"""Hardware catalogue: NPU and cluster YAML files (built-in under `hardware/` or the user's own).

An NPU file (`kind: npu`) gives per-chip figures; a cluster file (`kind: cluster`) names its NPU
(a catalogue name or an inline mapping) and its topology. Every figure of a built-in file has an
entry under `sources:` naming the public document it comes from (or saying 'assumed').
Validation errors name the file and the bad key.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List

import yaml

from . import PlanError

HARDWARE_DIR = os.path.join(os.path.dirname(__file__), "hardware")

NPU_NUMBERS = {  # key -> (type, must be > 0)
    "dies": (int, True), "hbm_gib": (float, True), "hbm_tbps": (float, True),
    "bf16_tflops": (float, True), "int8_tops": (float, False), "fp8_tflops": (float, False),
    "fp4_tflops": (float, False), "scale_up_gbps": (float, True),
    "scale_up_latency_us": (float, True), "scale_out_gbits": (float, True),
}
CLUSTER_NUMBERS = {"nodes": (int, True), "npus_per_node": (int, True),
                   "scale_up_domain_npus": (int, True), "host_memory_gib_per_node": (float, True)}
CLUSTER_OTHER = {"kind", "name", "npu", "scale_up_fabric", "scale_out_fabric", "cpus", "hosts",
                 "sources", "description"}


@dataclass
class Npu:
    """One chip's figures; a chip has `dies` HCCL ranks that share them equally."""
    name: str
    dies: int
    hbm_gib: float
    hbm_tbps: float
    bf16_tflops: float
    int8_tops: float
    fp8_tflops: float
    fp4_tflops: float
    scale_up_gbps: float
    scale_up_latency_us: float
    scale_out_gbits: float
    sources: Dict[str, str] = field(default_factory=dict)
    soc: str = ""          # SoC profile (custom_ops/runtime/soc_profiles.py): UB, cores, dtypes, formats

    # ---- per rank (die) -------------------------------------------------------------------
    @property
    def hbm_bytes_per_rank(self) -> int:
        return int(self.hbm_gib * 2 ** 30 / self.dies)

    @property
    def hbm_bw_per_rank(self) -> float:
        return self.hbm_tbps * 1e12 / self.dies

    @property
    def link_bw_per_rank(self) -> float:
        return self.scale_up_gbps * 1e9 / self.dies

    @property
    def scale_out_bw_per_rank(self) -> float:
        return self.scale_out_gbits * 1e9 / 8 / self.dies

    def peak_flops_per_rank(self, fmt: str) -> float:
        """Peak FLOP/s of one rank for a matmul whose weights are stored as `fmt`.

        A format without a native unit runs on the next wider one (weights dequantised):
        fp4 -> fp8 -> bf16; int8 -> bf16; MXFP8 runs on the FP8 unit.
        """
        per_chip = {"bf16": self.bf16_tflops, "fp32": self.bf16_tflops,
                    "int8": self.int8_tops or self.bf16_tflops,
                    "fp8": self.fp8_tflops or self.bf16_tflops,
                    "mxfp8": self.fp8_tflops or self.bf16_tflops,
                    "fp4": self.fp4_tflops or self.fp8_tflops or self.bf16_tflops}[fmt]
        return per_chip * 1e12 / self.dies


@dataclass
class Cluster:
    name: str
    npu: Npu
    nodes: int
    npus_per_node: int
    scale_up_domain_npus: int
    host_memory_gib_per_node: float
    scale_up_fabric: str = ""
    scale_out_fabric: str = ""
    cpus: Dict[str, Any] = field(default_factory=dict)
    hosts: List[Dict[str, Any]] = field(default_factory=list)
    sources: Dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def n_npus(self) -> int:
        return self.nodes * self.npus_per_node

    @property
    def n_ranks(self) -> int:
        return self.n_npus * self.npu.dies

    @property
    def ranks_per_node(self) -> int:
        return self.npus_per_node * self.npu.dies

    @property
    def scale_up_domain_ranks(self) -> int:
        return self.scale_up_domain_npus * self.npu.dies

    def restrict(self, n_npus: int) -> "Cluster":
        """The same hardware cut down to `n_npus` chips (whole nodes), e.g. a 64-chip A3 pod."""
        if n_npus % self.npus_per_node or n_npus > self.n_npus:
            raise PlanError(f"cannot take {n_npus} NPUs from {self.name}: need a multiple of "
                            f"{self.npus_per_node} up to {self.n_npus}")
        nodes = n_npus // self.npus_per_node
        return Cluster(self.name + f" ({n_npus} NPUs)", self.npu, nodes, self.npus_per_node,
                       min(self.scale_up_domain_npus, n_npus), self.host_memory_gib_per_node,
                       self.scale_up_fabric, self.scale_out_fabric, self.cpus,
                       self.hosts[:nodes], self.sources, self.path)


def builtin_names() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(HARDWARE_DIR) if f.endswith(".yaml"))


def _read(source: str) -> (Dict[str, Any], str):
    path = source if os.path.isfile(source) else os.path.join(HARDWARE_DIR, f"{source}.yaml")
    if not os.path.isfile(path):
        raise PlanError(f"unknown hardware {source!r}: not a file and not one of "
                        f"{', '.join(builtin_names())}")
    with open(path, "r", encoding="utf-8") as fh:
        try:
            raw = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise PlanError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise PlanError(f"{path}: expected a mapping of keys, got {type(raw).__name__}")
    return raw, path


def _numbers(raw: Dict[str, Any], spec: Dict[str, tuple], where: str) -> Dict[str, Any]:
    out = {}
    for key, (typ, positive) in spec.items():
        if key not in raw:
            raise PlanError(f"{where}: missing key '{key}'")
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (typ is int and not isinstance(value, int)):
            raise PlanError(f"{where}: key '{key}' must be a {typ.__name__}, got {value!r}")
        if value < 0 or (positive and value == 0):
            raise PlanError(f"{where}: key '{key}' must be {'> 0' if positive else '>= 0'}, "
                            f"got {value!r}")
        out[key] = typ(value)
    return out


def npu_from_dict(raw: Dict[str, Any], where: str) -> Npu:
    unknown = sorted(set(raw) - set(NPU_NUMBERS) - {"kind", "name", "sources", "description", "soc"})
    if unknown:
        raise PlanError(f"{where}: unknown key(s) {', '.join(unknown)}")
    if raw.get("kind", "npu") != "npu":
        raise PlanError(f"{where}: key 'kind' must be 'npu', got {raw.get('kind')!r}")
    soc = ""
    if raw.get("soc") is not None:
        from custom_ops.runtime.soc_profiles import SocError, get_profile
        try:
            soc = get_profile(raw["soc"]).name
        except SocError as exc:
            raise PlanError(f"{where}: key 'soc': {exc}") from None
    return Npu(name=str(raw.get("name", "custom NPU")), sources=dict(raw.get("sources") or {}), soc=soc,
               **_numbers(raw, NPU_NUMBERS, where))


def load_npu(source: str) -> Npu:
    raw, path = _read(source)
    return npu_from_dict(raw, path)


def load_cluster(source: str) -> Cluster:
    """A built-in cluster name (see `builtin_names`) or a path to a cluster YAML file."""
    raw, path = _read(source)
    if raw.get("kind") != "cluster":
        raise PlanError(f"{path}: key 'kind' must be 'cluster' (this file describes "
                        f"{raw.get('kind')!r}); pass a cluster, e.g. cloudmatrix384")
    unknown = sorted(set(raw) - set(CLUSTER_NUMBERS) - CLUSTER_OTHER)
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {', '.join(unknown)}")
    if "npu" not in raw:
        raise PlanError(f"{path}: missing key 'npu'")
    npu_raw = raw["npu"]
    if isinstance(npu_raw, str):
        npu = load_npu(npu_raw)
    elif isinstance(npu_raw, dict):
        npu = npu_from_dict(npu_raw, f"{path}: npu")
    else:
        raise PlanError(f"{path}: key 'npu' must be a catalogue name or a mapping, got {npu_raw!r}")
    nums = _numbers(raw, CLUSTER_NUMBERS, path)
    if nums["scale_up_domain_npus"] > nums["nodes"] * nums["npus_per_node"]:
        raise PlanError(f"{path}: key 'scale_up_domain_npus' ({nums['scale_up_domain_npus']}) "
                        f"exceeds nodes x npus_per_node ({nums['nodes'] * nums['npus_per_node']})")
    hosts = raw.get("hosts") or []
    _check_hosts(hosts, nums, npu, path)
    cpus = raw.get("cpus") or {}
    if not isinstance(cpus, dict):
        raise PlanError(f"{path}: key 'cpus' must be a mapping like {{model: ..., count: ...}}")
    for key in ("scale_up_fabric", "scale_out_fabric", "name"):
        if key in raw and not isinstance(raw[key], str):
            raise PlanError(f"{path}: key '{key}' must be a string, got {raw[key]!r}")
    return Cluster(name=str(raw.get("name", os.path.basename(path))), npu=npu, hosts=hosts,
                   scale_up_fabric=str(raw.get("scale_up_fabric", "")),
                   scale_out_fabric=str(raw.get("scale_out_fabric", "")), cpus=cpus,
                   sources=dict(raw.get("sources") or {}), path=path, **nums)


def _check_hosts(hosts: Any, nums: Dict[str, Any], npu: Npu, path: str) -> None:
    """Optional `hosts: [{host_ip: ..., device_ips: [...]}]`, one entry per node, used verbatim
    in the rank table (and quoted in launch scripts)."""
    if not isinstance(hosts, list):
        raise PlanError(f"{path}: key 'hosts' must be a list of {{host_ip, device_ips}}")
    if hosts and len(hosts) != nums["nodes"]:
        raise PlanError(f"{path}: key 'hosts' has {len(hosts)} entries; expected one per node "
                        f"({nums['nodes']})")
    ranks = nums["npus_per_node"] * npu.dies
    for i, host in enumerate(hosts):
        if not isinstance(host, dict) or set(host) - {"host_ip", "device_ips", "name"}:
            raise PlanError(f"{path}: key 'hosts[{i}]' must be a mapping with host_ip, device_ips")
        if not isinstance(host.get("host_ip"), str) or not host["host_ip"]:
            raise PlanError(f"{path}: key 'hosts[{i}].host_ip' must be a non-empty string")
        ips = host.get("device_ips")
        if not isinstance(ips, list) or len(ips) != ranks or not all(isinstance(x, str) for x in ips):
            raise PlanError(f"{path}: key 'hosts[{i}].device_ips' must list {ranks} strings "
                            "(one per rank of the node)")
