"""Benchmark groups for `ascend-v4 bench`: each module has run(quick) -> dict and plot(result, fig)."""
GROUPS = {"ops": "tools.bench.ops", "model": "tools.bench.model", "engine": "tools.bench.engine",
          "weights": "tools.bench.weights", "serve": "tools.bench.serve",
          "parallel": "tools.bench.parallel", "prefix": "tools.bench.prefix",
          "fp8_decode": "tools.bench.fp8_decode", "kvcache": "tools.bench.kvcache", "engram": "tools.bench.engram",
          "quant": "tools.bench.quant"}
