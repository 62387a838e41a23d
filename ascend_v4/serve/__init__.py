"""`ascend-v4 serve`: the OpenAI-compatible server (FastAPI + uvicorn) over the engine.
`python -m ascend_v4.serve` is the same command (the plan's launch scripts start it)."""
