"""Local stand-ins for the three LLM APIs, on 127.0.0.1 at random ports, one thread per request.

Each answers the way the real service does, in status codes, headers and body shapes, streaming
included (Ollama's NDJSON lines, OpenAI's and Anthropic's server-sent events), so the real SDK
clients (`ollama`, `openai`, `anthropic`) run unpatched against them:

- `OllamaStandIn`: `POST /api/chat` (streaming or not), `GET /api/tags`; errors as `{"error": "..."}`;
  an unknown model is a 404 `model "x" not found, try pulling it first`.
- `OpenAIStandIn`: `POST /v1/chat/completions`; errors as `{"error": {"message", "type", "param",
  "code"}}`; needs `Authorization: Bearer ...`; unknown model → 404 `model_not_found`.
- `AnthropicStandIn`: `POST /v1/messages`; with `output_config.format` answers a thinking block and
  a text block holding the JSON, with a forced `tool_choice` a `tool_use` block (or, for Claude 5.x
  models, the 400 the real API gives); errors as `{"type": "error", "error": {"type", "message"}}`; needs a key (`x-api-key` or
  `Authorization: Bearer`) and `anthropic-version`; unknown model → 404 `not_found_error`.

Tests script what the chat endpoint does next with `queue(...)` (consumed in order, then
`default`): `Answer(payload)` (valid JSON, with token usage), `Text("...")` (an answer that is not
JSON / has no tool call), `Fail(status, retry_after=...)`, `Slow(seconds, then)`, `ModelMissing()`.
A streamed answer can trickle (`gap` seconds between chunks) or go silent (`stall=(chunks, seconds)`).
`OpenAIStandIn(response_formats=("text", "json_object"))` refuses json_schema the way
llama-cpp-python's server does (HTTP 500 "Input should be 'text' or 'json_object'");
`answer_model` is the model name the server reports (llama.cpp names the GGUF file).
Every request is recorded in `requests` (path, headers, parsed JSON body, time). `refused_url()`
gives an address where nothing listens (connection refused).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Answer:
    """A successful answer whose JSON is `payload` (or payload(request_body))."""

    payload: Any
    input_tokens: int | None = None  # None: about a token per 4 bytes of the request
    output_tokens: int | None = None
    truncated: bool = False  # finish/stop reason "length" / "max_tokens"
    gap: float = 0.0  # streaming: seconds between chunks
    stall: tuple[int, float] | None = None  # streaming: after this many chunks, this long silent
    cache_read_tokens: int = 0  # Anthropic: input tokens read from the prompt cache


@dataclass
class Text:
    """A successful response whose answer is this text (not JSON; for Anthropic, no tool call)."""

    text: str
    input_tokens: int = 100
    output_tokens: int = 20
    gap: float = 0.0
    stall: tuple[int, float] | None = None
    cache_read_tokens: int = 0


@dataclass
class Fail:
    status: int
    retry_after: float | None = None
    message: str = ""


@dataclass
class Slow:
    seconds: float
    then: Any = None


@dataclass
class ModelMissing:
    pass


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float = field(default_factory=time.monotonic)
    behaviour: Any = None
    disconnected: bool = False  # the client closed the connection before the stream ended


def refused_url() -> str:
    """An http:// address on 127.0.0.1 where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class StandIn:
    chat_path = ""

    def __init__(self, models: tuple[str, ...]):
        self.models = list(models)
        self.answer_model: str | None = None
        self.requests: list[Recorded] = []
        self.script: list[Any] = []
        self.default: Any = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def queue(self, *behaviours: Any) -> StandIn:
        with self._lock:
            self.script.extend(behaviours)
        return self

    def reset(self) -> None:
        with self._lock:
            self.script.clear()
            self.requests.clear()
            self.default = None

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == self.chat_path]

    def close(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()

    # ---- plumbing

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode(errors="replace")
        path = handler.path.split("?")[0]
        record = Recorded(method, path, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
            behaviour = None
            if method == "POST" and path == self.chat_path:
                behaviour = self.script.pop(0) if self.script else self.default
        record.behaviour = behaviour
        status, headers, payload = self.respond(record, behaviour, len(raw))
        if status == 200 and isinstance(record.body, dict) and record.body.get("stream") and method == "POST":
            self._stream(handler, record, payload)
            return
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            for key, value in headers.items():
                handler.send_header(key, value)
            handler.end_headers()
            handler.wfile.write(data)
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout test)

    def _stream(self, handler: BaseHTTPRequestHandler, record: Recorded, payload: Any) -> None:
        behaviour = record.behaviour
        while isinstance(behaviour, Slow):
            behaviour = behaviour.then
        gap = getattr(behaviour, "gap", 0.0)
        stall = getattr(behaviour, "stall", None)
        frames = self.stream_frames(record, payload)
        handler.close_connection = True
        try:
            handler.send_response(200)
            handler.send_header("content-type", self.stream_type)
            handler.send_header("connection", "close")
            handler.end_headers()
            for index, frame in enumerate(frames):
                if stall and index == stall[0]:
                    if self._closing.wait(stall[1]):
                        return
                elif index and gap:
                    self._closing.wait(gap)
                handler.wfile.write(frame)
                handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            record.disconnected = True

    stream_type = "text/event-stream"

    @staticmethod
    def pieces(text: str, size: int = 12) -> list[str]:
        return [text[i:i + size] for i in range(0, len(text), size)] or [""]

    def stream_frames(self, record: Recorded, payload: Any) -> list[bytes]:
        raise NotImplementedError

    def respond(self, record: Recorded, behaviour: Any, size: int) -> tuple[int, dict[str, str], Any]:
        if record.method == "GET":
            return self.get(record)
        if record.path != self.chat_path:
            return 404, {}, self.error_body(404, f"no route {record.path}")
        problem = self.check(record)
        if problem:
            return problem
        if isinstance(behaviour, Slow):
            self._closing.wait(behaviour.seconds)
            behaviour = behaviour.then
        if isinstance(behaviour, ModelMissing) or (behaviour is not None and not isinstance(behaviour, Fail)
                                                   and record.body.get("model") not in self.models):
            return self.model_missing(record.body.get("model"))
        if isinstance(behaviour, Fail):
            headers = {} if behaviour.retry_after is None else {"retry-after": f"{behaviour.retry_after:g}"}
            return behaviour.status, headers, self.error_body(behaviour.status, behaviour.message)
        if isinstance(behaviour, (Answer, Text)) and self.refuses(record):
            return self.refuses(record)
        if isinstance(behaviour, Text):
            return 200, {}, self.success(record, behaviour.text, None, behaviour.input_tokens,
                                         behaviour.output_tokens, False)
        if isinstance(behaviour, Answer):
            payload = behaviour.payload(record.body) if callable(behaviour.payload) else behaviour.payload
            text = json.dumps(payload, ensure_ascii=False)
            tokens_in = behaviour.input_tokens if behaviour.input_tokens is not None else max(1, size // 4)
            tokens_out = behaviour.output_tokens if behaviour.output_tokens is not None else max(1, len(text) // 4)
            return 200, {}, self.success(record, text, payload, tokens_in, tokens_out, behaviour.truncated)
        return 500, {}, self.error_body(500, "stand-in: no scripted answer for this request")

    # ---- per API

    def get(self, record: Recorded) -> tuple[int, dict[str, str], Any]:
        return 404, {}, self.error_body(404, f"no route {record.path}")

    def check(self, record: Recorded) -> tuple[int, dict[str, str], Any] | None:
        return None

    def refuses(self, record: Recorded) -> tuple[int, dict[str, str], Any] | None:
        """A request the server does not support (e.g. a structured-output mode)."""
        return None

    def reported_model(self, record: Recorded) -> str:
        return self.answer_model or record.body["model"]

    def model_missing(self, model: str) -> tuple[int, dict[str, str], Any]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> Any:
        raise NotImplementedError

    def success(self, record: Recorded, text: str, payload: Any, tokens_in: int, tokens_out: int,
                truncated: bool) -> Any:
        raise NotImplementedError


class OllamaStandIn(StandIn):
    chat_path = "/api/chat"

    def __init__(self, models: tuple[str, ...] = ("qwen2.5:7b-instruct",)):
        super().__init__(models)

    def get(self, record: Recorded) -> tuple[int, dict[str, str], Any]:
        if record.path == "/api/tags":
            return 200, {}, {"models": [
                {"name": m, "model": m, "modified_at": "2025-11-14T16:54:00.000000+09:00", "size": 4683087332,
                 "digest": uuid.uuid5(uuid.NAMESPACE_DNS, m).hex * 2,
                 "details": {"parent_model": "", "format": "gguf", "family": "qwen2", "families": ["qwen2"],
                             "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}} for m in self.models]}
        if record.path in ("/", "/api/version"):
            return 200, {}, {"version": "0.12.6"}
        return super().get(record)

    def model_missing(self, model: str) -> tuple[int, dict[str, str], Any]:
        return 404, {}, {"error": f'model "{model}" not found, try pulling it first'}

    def error_body(self, status: int, message: str) -> Any:
        default = {429: "server busy, please try again.  maximum pending requests exceeded",
                   503: "server busy, please try again.  maximum pending requests exceeded",
                   500: "llama runner process has terminated: exit status 2"}
        return {"error": message or default.get(status, "error")}

    def success(self, record: Recorded, text: str, payload: Any, tokens_in: int, tokens_out: int,
                truncated: bool) -> Any:
        return {"model": self.reported_model(record), "created_at": "2025-11-14T07:54:00.123456Z",
                "message": {"role": "assistant", "content": text}, "done": True,
                "done_reason": "length" if truncated else "stop", "total_duration": 2_310_000_000,
                "load_duration": 21_000_000, "prompt_eval_count": tokens_in, "prompt_eval_duration": 180_000_000,
                "eval_count": tokens_out, "eval_duration": 2_100_000_000}


    stream_type = "application/x-ndjson"

    def stream_frames(self, record: Recorded, payload: Any) -> list[bytes]:
        frames = [{"model": payload["model"], "created_at": payload["created_at"],
                   "message": {"role": "assistant", "content": piece}, "done": False}
                  for piece in self.pieces(payload["message"]["content"])]
        frames.append({**payload, "message": {"role": "assistant", "content": ""}})
        return [json.dumps(f, ensure_ascii=False).encode() + b"\n" for f in frames]


def _sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"{head}data: {body}\n\n".encode()


class OpenAIStandIn(StandIn):
    chat_path = "/v1/chat/completions"

    def __init__(self, models: tuple[str, ...] = ("gpt-4o",),
                 response_formats: tuple[str, ...] = ("text", "json_object", "json_schema")):
        super().__init__(models)
        self.response_formats = response_formats

    def refuses(self, record: Recorded) -> tuple[int, dict[str, str], Any] | None:
        kind = (record.body.get("response_format") or {}).get("type", "text")
        if kind in self.response_formats:
            return None
        allowed = " or ".join(f"'{f}'" for f in self.response_formats)
        # llama-cpp-python's server: pydantic's literal error, surfaced as a 500.
        return 500, {}, {"error": {"message": f"[{{'type': 'literal_error', 'loc': ('body', 'response_format', "
                                              f"'type'), 'msg': \"Input should be {allowed}\", 'input': '{kind}'}}]",
                                   "type": "internal_server_error", "param": None, "code": None}}

    def stream_frames(self, record: Recorded, payload: Any) -> list[bytes]:
        base = {"id": payload["id"], "object": "chat.completion.chunk", "created": payload["created"],
                "model": payload["model"], "system_fingerprint": "fp_standin"}
        choice = payload["choices"][0]
        frames = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": piece},
                                        "logprobs": None, "finish_reason": None}]}
                  for piece in self.pieces(choice["message"]["content"])]
        frames.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                            "finish_reason": choice["finish_reason"]}]})
        if (record.body.get("stream_options") or {}).get("include_usage"):
            frames.append({**base, "choices": [], "usage": payload["usage"]})
        return [_sse(f) for f in frames] + [_sse("[DONE]")]

    def check(self, record: Recorded) -> tuple[int, dict[str, str], Any] | None:
        if not record.headers.get("authorization", "").startswith("Bearer "):
            return 401, {}, {"error": {"message": "You didn't provide an API key.", "type": "invalid_request_error",
                                       "param": None, "code": None}}
        return None

    def model_missing(self, model: str) -> tuple[int, dict[str, str], Any]:
        return 404, {}, {"error": {"message": f"The model `{model}` does not exist or you do not have access to it.",
                                   "type": "invalid_request_error", "param": None, "code": "model_not_found"}}

    def error_body(self, status: int, message: str) -> Any:
        if status == 429:
            return {"error": {"message": message or "Rate limit reached for gpt-4o in organization org-test on "
                                                    "tokens per min (TPM): Limit 30000, Used 30000, Requested 1200.",
                              "type": "tokens", "param": None, "code": "rate_limit_exceeded"}}
        return {"error": {"message": message or "The server had an error while processing your request. Sorry about that!",
                          "type": "server_error" if status >= 500 else "invalid_request_error", "param": None,
                          "code": None}}

    def success(self, record: Recorded, text: str, payload: Any, tokens_in: int, tokens_out: int,
                truncated: bool) -> Any:
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                "model": self.answer_model or record.body["model"] + "-2024-08-06",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None,
                                                     "annotations": []},
                             "logprobs": None, "finish_reason": "length" if truncated else "stop"}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                          "total_tokens": tokens_in + tokens_out,
                          "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                          "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                        "accepted_prediction_tokens": 0,
                                                        "rejected_prediction_tokens": 0}},
                "service_tier": "default", "system_fingerprint": "fp_standin"}


class AnthropicStandIn(StandIn):
    chat_path = "/v1/messages"

    def __init__(self, models: tuple[str, ...] = ("claude-sonnet-5-5", "claude-sonnet-4-6")):
        super().__init__(models)

    def _check_headers(self, record: Recorded) -> tuple[int, dict[str, str], Any] | None:
        # The API takes the key as x-api-key or (as SDK 2.x sends it) Authorization: Bearer.
        if not record.headers.get("x-api-key") and not record.headers.get("authorization", "").startswith("Bearer "):
            return 401, {}, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        if not record.headers.get("anthropic-version"):
            return 400, {}, {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "anthropic-version: header is required"}}
        return None

    def model_missing(self, model: str) -> tuple[int, dict[str, str], Any]:
        return 404, {}, {"type": "error", "error": {"type": "not_found_error", "message": f"model: {model}"}}

    def error_body(self, status: int, message: str) -> Any:
        kind = {429: "rate_limit_error", 529: "overloaded_error", 400: "invalid_request_error"}.get(status, "api_error")
        default = {429: "Number of request tokens has exceeded your per-minute rate limit", 529: "Overloaded"}
        return {"type": "error", "error": {"type": kind, "message": message or default.get(status, "Internal server error")}}

    def check(self, record: Recorded) -> tuple[int, dict[str, str], Any] | None:
        problem = self._check_headers(record)
        if problem:
            return problem
        # Claude 5.x thinks on every request and rejects a forced tool choice (use structured outputs).
        forced = (record.body.get("tool_choice") or {}).get("type") in ("tool", "any")
        if forced and str(record.body.get("model", "")).startswith(("claude-sonnet-5", "claude-opus-5")):
            return 400, {}, {"type": "error", "error": {
                "type": "invalid_request_error",
                "message": "tool_choice: forcing tool use is not supported with this model; "
                           "use output_config.format for structured outputs"}}
        return None

    def success(self, record: Recorded, text: str, payload: Any, tokens_in: int, tokens_out: int,
                truncated: bool) -> Any:
        structured = bool((record.body.get("output_config") or {}).get("format"))
        if payload is None or structured or not record.body.get("tools"):
            content = [{"type": "text", "text": text}]
            if structured:  # adaptive thinking comes first on current models
                content.insert(0, {"type": "thinking", "thinking": "Planning the answer.",
                                   "signature": "c3RhbmQtaW4="})
            stop = "end_turn"
        else:
            tool = (record.body.get("tool_choice") or {}).get("name") or record.body["tools"][0]["name"]
            content = [{"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:24]}", "name": tool, "input": payload}]
            stop = "tool_use"
        cached = getattr(record.behaviour, "cache_read_tokens", 0) or 0
        return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
                "model": self.reported_model(record), "content": content,
                "stop_reason": "max_tokens" if truncated else stop, "stop_sequence": None,
                "usage": {"input_tokens": tokens_in - cached, "output_tokens": tokens_out,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached,
                          "service_tier": "standard"}}

    def stream_frames(self, record: Recorded, payload: Any) -> list[bytes]:
        usage = payload["usage"]
        start = {**payload, "content": [], "stop_reason": None,
                 "usage": {**usage, "output_tokens": 1}}
        frames = [_sse({"type": "message_start", "message": start}, "message_start")]
        for index, block in enumerate(payload["content"]):
            if block["type"] == "text":
                frames.append(_sse({"type": "content_block_start", "index": index,
                                    "content_block": {"type": "text", "text": ""}}, "content_block_start"))
                for piece in self.pieces(block["text"]):
                    frames.append(_sse({"type": "content_block_delta", "index": index,
                                        "delta": {"type": "text_delta", "text": piece}}, "content_block_delta"))
            elif block["type"] == "thinking":
                frames.append(_sse({"type": "content_block_start", "index": index,
                                    "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
                                   "content_block_start"))
                frames.append(_sse({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "thinking_delta", "thinking": block["thinking"]}},
                                   "content_block_delta"))
                frames.append(_sse({"type": "content_block_delta", "index": index,
                                    "delta": {"type": "signature_delta", "signature": block["signature"]}},
                                   "content_block_delta"))
            else:
                frames.append(_sse({"type": "content_block_start", "index": index,
                                    "content_block": {**block, "input": {}}}, "content_block_start"))
                for piece in self.pieces(json.dumps(block["input"], ensure_ascii=False)):
                    frames.append(_sse({"type": "content_block_delta", "index": index,
                                        "delta": {"type": "input_json_delta", "partial_json": piece}},
                                       "content_block_delta"))
            frames.append(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        frames.append(_sse({"type": "message_delta", "delta": {"stop_reason": payload["stop_reason"],
                                                               "stop_sequence": None},
                            "usage": {"output_tokens": usage["output_tokens"]}}, "message_delta"))
        frames.append(_sse({"type": "message_stop"}, "message_stop"))
        return frames


def start_all() -> tuple[OllamaStandIn, OpenAIStandIn, AnthropicStandIn]:
    return OllamaStandIn(), OpenAIStandIn(), AnthropicStandIn()


