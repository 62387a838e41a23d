"""Build, load and call the CPU twins of the AscendC kernels (see custom_ops/README.md)."""
from custom_ops.runtime.errors import KernelRuleError, TwinBuildError
from custom_ops.runtime.build import twin_library, twin_library_path
from custom_ops.runtime.soc_profiles import PROFILES, SocError, SocProfile, get_profile
from custom_ops.runtime.soc_spec import set_soc, get_soc, soc
from custom_ops.runtime.runner import call_aot

__all__ = ["KernelRuleError", "TwinBuildError", "twin_library", "twin_library_path", "set_soc",
           "get_soc", "soc", "call_aot", "PROFILES", "SocError", "SocProfile", "get_profile"]
