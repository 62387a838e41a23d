"""Prometheus metrics of one server (its own registry), fed by the engine's observer hooks and
the HTTP layer."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from ascend_v4.engine import EngineObserver, Request

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
PREFIX = "ascend_v4_"
disable_created_metrics()      # no *_created series: they double the exposition for nothing


class ServerMetrics(EngineObserver):
    def __init__(self, model_name: str, slots: int):
        self.registry = r = CollectorRegistry()
        self.requests = Counter(PREFIX + "requests", "HTTP API requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.finished = Counter(PREFIX + "request_finish", "Generation requests by finish reason",
                                ["reason"], registry=r)
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.cached_tokens = Counter(PREFIX + "prompt_tokens_cached", "Prompt tokens of finished requests "
                                     "restored from the prefix cache (not prefilled)", registry=r)
        self.generation_tokens = Counter(PREFIX + "generation_tokens", "Generated tokens", registry=r)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Arrival to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram(PREFIX + "time_per_output_token_seconds",
                              "Mean time between tokens after the first, per request", buckets=LATENCY_BUCKETS,
                              registry=r)
        self.e2e = Histogram(PREFIX + "e2e_request_latency_seconds", "Arrival to finish",
                             buckets=LATENCY_BUCKETS, registry=r)
        self.running = Gauge(PREFIX + "requests_running", "Requests holding a slot", registry=r)
        self.waiting = Gauge(PREFIX + "requests_waiting", "Requests in the waiting queue", registry=r)
        self.slots_in_use = Gauge(PREFIX + "kv_slots_in_use", "Sequence slots (KV state rows) in use", registry=r)
        Gauge(PREFIX + "kv_slots_total", "Sequence slots (max batch)", registry=r).set(slots)
        self.drafted = Counter(PREFIX + "spec_draft_tokens", "MTP draft tokens proposed", registry=r)
        self.accepted = Counter(PREFIX + "spec_accepted_tokens", "MTP draft tokens accepted", registry=r)
        self.acceptance = Gauge(PREFIX + "spec_acceptance_rate", "Accepted / drafted MTP tokens so far", registry=r)
        info = Gauge(PREFIX + "model_info", "The served model", ["model"], registry=r)
        info.labels(model=model_name).set(1)
        self._drafted = self._accepted = 0

    # ---- engine hooks (engine thread) ----
    def on_first_token(self, request: Request) -> None:
        self.ttft.observe(request.first_token_time - request.arrival)

    def on_finish(self, request: Request) -> None:
        self.finished.labels(reason=request.finish_reason).inc()
        self.prompt_tokens.inc(len(request.prompt))
        self.cached_tokens.inc(request.cached_tokens)
        self.generation_tokens.inc(len(request.output))
        self.e2e.observe(request.finish_time - request.arrival)
        if len(request.output) > 1 and request.first_token_time is not None:
            self.tpot.observe((request.finish_time - request.first_token_time) / (len(request.output) - 1))

    def on_speculation(self, drafted: int, accepted: int) -> None:
        self.drafted.inc(drafted)
        self.accepted.inc(accepted)
        self._drafted += drafted
        self._accepted += accepted
        if self._drafted:
            self.acceptance.set(self._accepted / self._drafted)

    def on_occupancy(self, slots_in_use: int, waiting: int) -> None:
        self.running.set(slots_in_use)          # a running request holds a slot (prefilling or decoding)
        self.waiting.set(waiting)
        self.slots_in_use.set(slots_in_use)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
