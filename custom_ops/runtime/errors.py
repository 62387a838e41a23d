"""Exceptions raised by the CPU twins."""


class KernelRuleError(RuntimeError):
    """A kernel broke a hardware rule in the CPU twin; the message names the kernel and the rule."""


class TwinBuildError(RuntimeError):
    """g++ could not build a CPU twin (the message holds the compiler's error)."""


class AscendBuildError(RuntimeError):
    """The real (CANN) custom-op package cannot be built here; the message says what is missing."""
