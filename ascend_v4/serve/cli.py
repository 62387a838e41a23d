"""`ascend-v4 serve` / `python -m ascend_v4.serve`: load a model, compile its graphs, serve the
OpenAI API with uvicorn until SIGTERM / SIGINT (in-flight requests get --drain-timeout seconds to
finish, then are cancelled; the engine thread is joined before the process exits)."""
from __future__ import annotations

import logging
import os
import time

import click

from ascend_v4.errors import user_errors
from ascend_v4.kv_tiers.options import kv_options, kv_overrides
from ascend_v4.parallel.options import parallel_options, resolve

log = logging.getLogger("ascend_v4.serve")


def check_port(host: str, port: int) -> None:
    """A clear error now if host:port cannot be bound (in use, or not an address of this machine)."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(infos[0][4])
    except OSError as exc:
        raise click.UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


@click.command("serve")
@click.option("--preset", help="preset name (random weights, tiny configs only)")
@click.option("--checkpoint", type=click.Path(), envvar="ASCEND_V4_CHECKPOINT", show_envvar=True,
              help="checkpoint folder (tokenizer.json enables text prompts)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch", type=click.IntRange(min=1), default=4, show_default=True,
              help="sequence slots decoded together (the model's max_batch_size)")
@click.option("--max-queue", type=click.IntRange(min=0), default=64, show_default=True,
              help="requests waiting for a slot; more are answered 429")
@click.option("--max-seq-len", type=click.IntRange(min=1), help="context per slot (default: the model's)")
@click.option("--prefill-chunk", type=click.IntRange(min=1), help="most prompt tokens per prefill call "
              "(default: the runtime's); prompts run in chunks interleaved with decode steps")
@click.option("--prefill-budget", type=click.IntRange(min=1), help="prompt tokens prefilled per engine step "
              "before the running rows decode again (default: --prefill-chunk); larger favours time to first "
              "token, smaller time per output token")
@click.option("--speculative", type=click.Choice(["mtp"]), help="MTP speculative decoding (1 draft token)")
@click.option("--prefix-cache", "prefix_cache_size", default="1GiB", show_default=True,
              help="host memory for cached prompt-prefix states (e.g. 512MiB; 0: off): a prompt that starts "
              "with a cached prefix prefills only the rest (usage.prompt_tokens_details.cached_tokens)")
@click.option("--served-model-name", help="the model name clients use (default: preset or folder name)")
@click.option("--compute-dtype", type=click.Choice(["float32", "float64"]), default="float32", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="weight seed for --preset")
@click.option("--drain-timeout", type=click.FloatRange(min=0), default=5.0, show_default=True,
              help="seconds in-flight requests may run on after SIGTERM")
@click.option("--warmup/--no-warmup", default=True, show_default=True,
              help="compile every graph before opening the port")
@click.option("--role", type=click.Choice(["prefill", "decode", "colocated"]), default="colocated",
              show_default=True, help="the plan's instance role (one process serves both phases)")
@click.option("--parallel-config", type=click.Path(), help="parallel_<role>_<i>.json from `ascend-v4 plan --out` "
              "(its attention_tp and expert_parallel; instead of the two flags)")
@kv_options
@parallel_options
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info", show_default=True)
def command(preset, checkpoint, host, port, max_batch, max_queue, max_seq_len, prefill_chunk, prefill_budget,
            speculative, prefix_cache_size, served_model_name, compute_dtype, seed, drain_timeout, warmup, role,
            parallel_config, kv_cache, indexer_cache, kv_budget, kv_spill_dir, tensor_parallel, expert_parallel, log_level):
    """Serve the OpenAI API (completions, chat, streaming, /metrics) with continuous batching.
    Under `ascend-v4 launch`, rank 0 answers HTTP and every rank steps the same batch."""
    if bool(preset) == bool(checkpoint):
        raise click.UsageError("give exactly one of --preset or --checkpoint")
    if checkpoint and not os.path.isdir(checkpoint):
        raise click.BadParameter(f"{checkpoint} is not a folder", param_hint="--checkpoint")
    tp, ep, placement = resolve(tensor_parallel, expert_parallel, parallel_config)
    kv = kv_overrides(kv_budget, kv_spill_dir, kv_cache, indexer_cache)
    with user_errors():
        from ascend_v4.parallel.layout import layout_for
        from ascend_v4.sizes import parse_bytes
        prefix_bytes = parse_bytes(prefix_cache_size, "--prefix-cache")
        layout = layout_for(tp, ep, placement)
    if layout.rank == 0:
        check_port(host, port)                   # before minutes of loading and compiling
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    name = served_model_name or (preset or os.path.basename(os.path.normpath(checkpoint)))
    with user_errors():
        import ascend_v4
        from ascend_v4.engine import Engine
        from ascend_v4.parallel.lockstep import ranks_in_step
        t0 = time.perf_counter()
        model = ascend_v4.load(checkpoint or preset, seed=seed, prefill_chunk=prefill_chunk,
                               max_batch_size=max_batch, max_seq_len=max_seq_len, compute_dtype=compute_dtype,
                               tensor_parallel=tp, expert_parallel=ep, expert_placement=placement, **kv)
        log.info("loaded %s in %.1f s: %d slots x %d tokens, buckets %s, tokenizer %s, role %s, %s", name,
                 time.perf_counter() - t0, model.max_batch, model.max_seq_len, model.buckets,
                 "yes" if model.tokenizer else "no (token ids only)", role, layout.describe())
    if layout.distributed and layout.rank != 0:
        follow_rank_zero(model)
        return
    with ranks_in_step(model) as driver:
        with user_errors():
            from ascend_v4.engine.prefix_cache import PrefixCache
            if prefix_bytes and layout.distributed:
                log.info("prefix cache off: under launch each rank would need its own copy (not built)")
                prefix_bytes = 0
            if prefix_bytes and model.runtime.kv_budget is not None:
                log.info("prefix cache off: it copies dense and model1_pages state rows; the tiered "
                         "KV cache's pages move between tiers (not built)")
                prefix_bytes = 0
            cache = PrefixCache(model.spec, prefix_bytes) if prefix_bytes else None
            engine = Engine(driver, max_queue=max_queue, speculative=speculative, prefill_budget=prefill_budget,
                            prefix_cache=cache)
            if warmup:
                t0 = time.perf_counter()
                engine.warm_up()
                log.info("compiled the serving graphs in %.1f s", time.perf_counter() - t0)
        serve(engine, name, host, port, drain_timeout, log_level)


def follow_rank_zero(model) -> None:
    """A rank other than 0 replays rank 0's model calls until rank 0 shuts down. It ignores
    SIGTERM / SIGINT (msrun and `launch` signal every rank): rank 0 drains, then releases it."""
    import signal
    from ascend_v4.parallel.lockstep import ranks_in_step
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, f: log.info("signal %d: waiting for rank 0 to drain", s))
    with ranks_in_step(model):
        pass


def serve(engine, name: str, host: str, port: int, drain_s: float, log_level: str = "info") -> None:
    """Run uvicorn in this thread until SIGTERM / SIGINT. On the signal the engine is drained
    first (running requests get drain_s to finish, then end with finish_reason 'abort', new ones
    get 503), so every stream is closed before uvicorn shuts down; then this returns (exit 0)."""
    import threading
    import uvicorn
    from ascend_v4.serve.app import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if getattr(self, "_draining", False):      # a second signal: stop now
                return super().handle_exit(sig, frame)
            self._draining = True
            log.info("signal %d: draining for up to %.1f s", sig, drain_s)

            def drain():
                engine.stop(drain_s)
                self.should_exit = True       # not handle_exit: uvicorn would re-raise the signal
                                              # and kill this process before rank 0 releases the others
            threading.Thread(target=drain, name="ascend-v4-drain").start()

    app = create_app(engine, name, drain_s=drain_s)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=drain_s + 1.0, lifespan="on")
    log.info("serving %s on http://%s:%d (OpenAI API under /v1)", name, host, port)
    Server(config).run()
