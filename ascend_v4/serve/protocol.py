"""The OpenAI request bodies this server takes, validated into what the engine needs.

Every mistake a client can make becomes an `APIError` (HTTP 400 unless said otherwise) with an
OpenAI-style body {"error": {"message", "type", "param", "code"}}. Parameters the server does not
implement are refused by name rather than silently ignored.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator


class APIError(Exception):
    def __init__(self, message: str, param: Optional[str] = None, status: int = 400,
                 type: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.message, self.param, self.status, self.type, self.code = message, param, status, type, code

    def body(self) -> Dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions (OpenAI defaults)."""
    model_config = ConfigDict(extra="allow")     # unknown fields are checked by name in `refuse_unsupported`

    model: Optional[str] = None
    max_tokens: Optional[int] = None
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    stop: Optional[Union[str, List[str]]] = None
    n: int = 1
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    ignore_eos: bool = False                     # vLLM's extension: do not stop at the EOS token
    user: Optional[str] = None

    @field_validator("temperature", "top_p", "n", "stream", "ignore_eos", mode="before")
    @classmethod
    def _null_is_default(cls, value, info):
        """An explicit JSON null means the OpenAI default."""
        return cls.model_fields[info.field_name].default if value is None else value


class CompletionRequest(_Common):
    prompt: Union[str, List[int], List[str], List[List[int]]]
    max_tokens: Optional[int] = 16               # the OpenAI default for completions


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, List[Dict[str, Any]], None] = None


class ChatRequest(_Common):
    messages: List[ChatMessage]
    max_completion_tokens: Optional[int] = None


# parameter -> its value that means "not used"; any other value is refused by name
UNSUPPORTED = {"logprobs": (None, False, 0), "top_logprobs": (None, 0), "echo": (None, False),
               "best_of": (None, 1), "suffix": (None, ""), "logit_bias": (None, {}),
               "presence_penalty": (None, 0, 0.0), "frequency_penalty": (None, 0, 0.0),
               "tools": (None, []), "tool_choice": (None, "none"), "functions": (None, []),
               "function_call": (None, "none"), "parallel_tool_calls": (None,),
               "response_format": (None, {"type": "text"}), "min_tokens": (None, 0),
               "repetition_penalty": (None, 1, 1.0), "top_k": (None, -1, 0)}


def parse(model_cls, body: Any):
    """A JSON body -> the request model, or an APIError naming the first bad field."""
    if not isinstance(body, dict):
        raise APIError("the request body must be a JSON object")
    try:
        req = model_cls.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in _field_path(err["loc"])) or None
        raise APIError(f"{param}: {err['msg']}" if param else err["msg"], param=param) from None
    _refuse_unsupported(body)
    _check_sampling(req)
    return req


def _field_path(loc) -> list:
    """A validation error's location up to the field: pydantic appends the Union member it tried
    ('str', 'list[int]', ...), which is not a parameter name."""
    path = []
    for part in loc:
        if isinstance(part, str) and (part in ("str", "int", "float", "bool", "dict", "list") or "[" in part):
            break
        path.append(part)
    return path


def _refuse_unsupported(body: Dict[str, Any]) -> None:
    for name, neutral in UNSUPPORTED.items():
        if name in body and body[name] not in neutral:
            raise APIError(f"{name} is not supported by this server", param=name, code="unsupported_parameter")


def _check_sampling(req: _Common) -> None:
    if req.n != 1:
        raise APIError(f"n must be 1 (one choice per request), got {req.n}", param="n", code="unsupported_parameter")
    if req.temperature < 0:
        raise APIError(f"temperature must be >= 0, got {req.temperature}", param="temperature")
    if not 0 < req.top_p <= 1:
        raise APIError(f"top_p must lie in (0, 1], got {req.top_p}", param="top_p")
    stops = stop_strings(req)
    if len(stops) > 4 or any(not s for s in stops):
        raise APIError("stop takes up to 4 non-empty strings", param="stop")


def stop_strings(req: _Common) -> List[str]:
    if req.stop is None:
        return []
    return [req.stop] if isinstance(req.stop, str) else list(req.stop)


def completion_prompt(req: CompletionRequest):
    """The one prompt of a completion request: text (str) or token ids (list of int)."""
    p = req.prompt
    if isinstance(p, list) and p and isinstance(p[0], (str, list)):
        if len(p) != 1:
            raise APIError(f"one prompt per request, got a batch of {len(p)}", param="prompt",
                           code="unsupported_parameter")
        p = p[0]
    if len(p) == 0:
        raise APIError("the prompt is empty", param="prompt")
    return p


def chat_messages(req: ChatRequest) -> List[Dict[str, str]]:
    """Messages as {role, content} with text content (text parts joined)."""
    if not req.messages:
        raise APIError("messages must not be empty", param="messages")
    out = []
    for i, m in enumerate(req.messages):
        if m.role not in ("system", "developer", "user", "assistant"):
            raise APIError(f"messages[{i}].role {m.role!r} is not supported (system, developer, user, "
                           "assistant)", param=f"messages.{i}.role")
        content = m.content or ""
        if isinstance(content, list):
            if any(part.get("type") != "text" for part in content):
                raise APIError(f"messages[{i}]: only text content parts are supported",
                               param=f"messages.{i}.content")
            content = "".join(str(part.get("text", "")) for part in content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    return out


def chat_max_tokens(req: ChatRequest) -> Optional[int]:
    return req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
