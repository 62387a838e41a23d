"""DeepSeek-V4 in MindSpore. `ascend_v4.load(path_or_preset, **overrides) -> Model`."""
from ascend_v4.config import ModelConfig, ConfigError, load_config  # noqa: F401


def load(path_or_preset: str = "tiny", **overrides):
    """Load a checkpoint folder or build a preset with random weights; returns a Model."""
    from ascend_v4.api import load as _load
    return _load(path_or_preset, **overrides)
