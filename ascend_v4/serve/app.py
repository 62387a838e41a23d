"""The OpenAI-compatible HTTP API (FastAPI) over one `Engine`.

  POST /v1/completions, POST /v1/chat/completions   (stream: server-sent events ending in [DONE])
  GET  /v1/models, GET /health, GET /metrics         (Prometheus text format)

Handlers turn a body into prompt ids + SamplingParams, submit a Request whose sink feeds an
asyncio queue from the engine thread, and relay tokens as text. A client that goes away cancels
its request (the slot frees at the next step). Errors are OpenAI-style JSON with status 400
(bad request), 429 (queue full) or 503 (shutting down); the server keeps serving.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, List, Optional

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import JSONResponse, Response, StreamingResponse

from ascend_v4.engine import Engine, QueueFull, Request, RequestError, SamplingParams, ShuttingDown
from ascend_v4.serve import protocol
from ascend_v4.serve.metrics import ServerMetrics
from ascend_v4.serve.protocol import APIError
from ascend_v4.serve.text import TextStream
from ascend_v4.tokenizer import TokenizerError

log = logging.getLogger("ascend_v4.serve")
DISCONNECT_POLL_S = 0.25


@dataclass
class Job:
    """One API call in flight: the engine request, its event queue and its text stream."""
    kind: str                      # 'completion' | 'chat'
    id: str
    request: Request
    events: asyncio.Queue
    text: TextStream
    created: int
    include_usage: bool

    def usage(self) -> Dict[str, int]:
        prompt, completion = len(self.request.prompt), self.text.tokens_used
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": self.request.cached_tokens}}


def create_app(engine: Engine, model_name: str, metrics: Optional[ServerMetrics] = None,
               drain_s: float = 5.0) -> FastAPI:
    model = engine.model
    tokenizer = model.tokenizer
    metrics = metrics or ServerMetrics(model_name, model.max_batch)
    engine.observer = metrics
    started = int(time.time())

    async def lifespan(app):
        if not engine.alive:
            engine.start()
        yield
        await asyncio.get_running_loop().run_in_executor(None, engine.stop, drain_s)

    app = FastAPI(title="ascend-v4", lifespan=lifespan)

    # ---- errors ----------------------------------------------------------------------------------
    def error_response(exc: APIError, endpoint: str) -> JSONResponse:
        metrics.requests.labels(endpoint=endpoint, status=str(exc.status)).inc()
        log.info("%s %d %s: %s", endpoint, exc.status, exc.type, exc.message)
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(APIError)
    async def _api_error(request: HTTPRequest, exc: APIError):
        return error_response(exc, request.url.path)

    @app.exception_handler(Exception)
    async def _internal(request: HTTPRequest, exc: Exception):
        log.exception("internal error on %s", request.url.path)
        return error_response(APIError(f"internal error: {type(exc).__name__}", status=500,
                                       type="internal_error"), request.url.path)

    async def json_body(http: HTTPRequest) -> Any:
        raw = await http.body()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise APIError(f"malformed JSON body: {exc}") from None

    # ---- building a job ---------------------------------------------------------------------------
    def check_model(name: Optional[str]) -> None:
        if name is not None and name != model_name:
            raise APIError(f"the model {name!r} does not exist; this server serves {model_name!r}",
                           param="model", code="model_not_found")

    def encode_prompt(prompt) -> List[int]:
        if isinstance(prompt, str):
            if tokenizer is None:
                raise APIError("this model has no tokenizer (no tokenizer.json in its checkpoint): give the "
                               "prompt as a list of token ids", param="prompt")
            return tokenizer.encode(prompt)
        return list(prompt)

    def start_job(kind: str, body, prompt_ids: List[int], max_tokens: Optional[int]) -> Job:
        stops = protocol.stop_strings(body)
        if stops and tokenizer is None:
            raise APIError("stop strings need a tokenizer; this model has none", param="stop")
        if max_tokens is None:
            max_tokens = model.max_seq_len - len(prompt_ids)
        eos = () if body.ignore_eos or tokenizer is None else tokenizer.eos_token_ids
        params = SamplingParams(max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p,
                                seed=body.seed, stop_token_ids=tuple(eos))
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def sink(tokens, finish):
            try:
                loop.call_soon_threadsafe(events.put_nowait, (tokens, finish))
            except RuntimeError:          # the event loop is closed: the server is gone
                pass

        request = Request(prompt_ids, params, sink)
        try:
            engine.submit(request)
        except RequestError as exc:
            param = "messages" if kind == "chat" and exc.param == "prompt" else exc.param
            raise APIError(str(exc), param=param, code=exc.code) from None
        except QueueFull as exc:
            raise APIError(str(exc), status=429, type="rate_limit_error", code="queue_full") from None
        except ShuttingDown as exc:
            raise APIError(str(exc), status=503, type="service_unavailable") from None
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return Job(kind, f"{prefix}-{uuid.uuid4().hex[:24]}", request, events, TextStream(tokenizer, stops),
                   int(time.time()), include_usage)

    async def next_event(job: Job, http: HTTPRequest):
        """The job's next (tokens, finish_reason); None if the client went away (request cancelled)."""
        while True:
            try:
                return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                if await http.is_disconnected():
                    engine.cancel(job.request)
                    return None

    def advance(job: Job, tokens, finish):
        """Feed tokens; -> (text piece, finish reason or None). A stop string finishes the job."""
        piece = job.text.feed(tokens, final=finish is not None)
        if job.text.stopped and finish is None:
            engine.cancel(job.request, reason="stop")
            finish = "stop"
        return piece, finish

    def log_done(endpoint: str, job: Job, finish: str) -> None:
        r = job.request
        ttft = (r.first_token_time - r.arrival) if r.first_token_time else float("nan")
        log.info("%s 200 id=%s prompt=%d completion=%d finish=%s ttft=%.3fs e2e=%.3fs", endpoint, job.id,
                 len(r.prompt), job.text.tokens_used, finish, ttft, time.monotonic() - r.arrival)

    # ---- responses --------------------------------------------------------------------------------
    def choice(job: Job, piece: str, finish: Optional[str], stream: bool) -> Dict[str, Any]:
        if job.kind == "completion":
            return {"index": 0, "text": piece, "logprobs": None, "finish_reason": finish}
        if stream:
            return {"index": 0, "delta": {"content": piece} if piece else {}, "logprobs": None,
                    "finish_reason": finish}
        return {"index": 0, "message": {"role": "assistant", "content": piece}, "logprobs": None,
                "finish_reason": finish}

    def envelope(job: Job, choices, stream: bool) -> Dict[str, Any]:
        obj = {"completion": "text_completion", "chat": "chat.completion"}[job.kind]
        if stream and job.kind == "chat":
            obj = "chat.completion.chunk"
        return {"id": job.id, "object": obj, "created": job.created, "model": model_name, "choices": choices}

    async def respond(job: Job, http: HTTPRequest, stream: bool, endpoint: str):
        metrics.requests.labels(endpoint=endpoint, status="200").inc()
        if stream:
            return StreamingResponse(sse(job, http, endpoint), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        finish = None
        while finish is None:
            event = await next_event(job, http)
            if event is None:
                return Response(status_code=499)
            _, finish = advance(job, *event)
        log_done(endpoint, job, finish)
        body = envelope(job, [choice(job, job.text.full_text, finish, False)], False)
        body["usage"] = job.usage()
        return JSONResponse(body)

    async def sse(job: Job, http: HTTPRequest, endpoint: str) -> AsyncIterator[str]:
        def event(obj) -> str:
            return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
        try:
            if job.kind == "chat":
                yield event(envelope(job, [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                            "logprobs": None, "finish_reason": None}], True))
            finish = None
            while finish is None:
                got = await next_event(job, http)
                if got is None:
                    return
                piece, finish = advance(job, *got)
                if piece or finish:
                    yield event(envelope(job, [choice(job, piece, finish, True)], True))
            if job.include_usage:
                yield event({**envelope(job, [], True), "usage": job.usage()})
            yield "data: [DONE]\n\n"
            log_done(endpoint, job, finish)
        finally:                                   # client gone or server stopping: free the slot
            engine.cancel(job.request)

    # ---- routes -----------------------------------------------------------------------------------
    @app.post("/v1/completions")
    async def completions(http: HTTPRequest):
        body = protocol.parse(protocol.CompletionRequest, await json_body(http))
        check_model(body.model)
        job = start_job("completion", body, encode_prompt(protocol.completion_prompt(body)), body.max_tokens)
        return await respond(job, http, body.stream, "/v1/completions")

    @app.post("/v1/chat/completions")
    async def chat(http: HTTPRequest):
        body = protocol.parse(protocol.ChatRequest, await json_body(http))
        check_model(body.model)
        if tokenizer is None:
            raise APIError("chat needs a tokenizer (tokenizer.json with a chat_template); this model has none: "
                           "use /v1/completions with token ids", param="messages")
        try:
            ids = tokenizer.encode_chat(protocol.chat_messages(body))
        except TokenizerError as exc:
            raise APIError(str(exc), param="messages") from None
        job = start_job("chat", body, ids, protocol.chat_max_tokens(body))
        return await respond(job, http, body.stream, "/v1/chat/completions")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": started,
                                            "owned_by": "ascend-v4", "max_model_len": model.max_seq_len}]}

    @app.get("/health")
    async def health():
        alive = engine.alive
        return JSONResponse({"status": "ok" if alive else "engine stopped"}, status_code=200 if alive else 503)

    @app.get("/metrics")
    async def prometheus():
        return Response(metrics.exposition(), media_type="text/plain; version=0.0.4; charset=utf-8")

    return app
