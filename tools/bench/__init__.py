"""Benchmark groups for `ascend-v4 bench`: each module has run(quick) -> dict and plot(result, fig)."""
GROUPS = {"ops": "tools.bench.ops", "model": "tools.bench.model", "engine": "tools.bench.engine",
          "weights": "tools.bench.weights", "serve": "tools.bench.serve",
          "parallel": "tools.bench.parallel", "prefix": "tools.bench.prefix",
          "quant": "tools.bench.quant"}
