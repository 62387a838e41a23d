"""Checkpoints: schema (names/dtypes/shapes), random writer, validating streaming loader."""
from ascend_v4.checkpoint.errors import CheckpointError  # noqa: F401
from ascend_v4.checkpoint.schema import (TensorSpec, WEIGHT_FORMATS, checkpoint_schema,  # noqa: F401
                                         split_dim, expert_index)
from ascend_v4.checkpoint.names import hf_to_converted, converted_to_hf  # noqa: F401
from ascend_v4.checkpoint.writer import (write_random_checkpoint, random_tensors,  # noqa: F401
                                         checkpoint_config)
from ascend_v4.checkpoint.loader import Checkpoint, open_checkpoint  # noqa: F401
