"""The serving engine: requests, continuous batching over the model's slots, MTP speculation."""
from ascend_v4.engine.request import (FINISH_ABORT, FINISH_LENGTH, FINISH_STOP, Request, RequestError,
                                      SamplingParams)
from ascend_v4.engine.scheduler import Engine, EngineObserver, QueueFull, ShuttingDown

__all__ = ["Engine", "EngineObserver", "QueueFull", "ShuttingDown", "Request", "RequestError", "SamplingParams",
           "FINISH_ABORT", "FINISH_LENGTH", "FINISH_STOP"]
