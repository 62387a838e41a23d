"""`ascend-v4 serve`: the OpenAI-compatible server (ascend_v4/serve)."""
from ascend_v4.serve.cli import command  # noqa: F401
