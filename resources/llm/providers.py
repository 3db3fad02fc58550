"""One class per LLM API, each speaking it through the vendor's own SDK, always streaming:

- Ollama (`ollama` package): `/api/chat` with `format=<JSON schema>` (grammar-constrained decoding,
  so the schema goes with its limits: maxLength, item counts).
- OpenAI and any OpenAI-compatible server (`openai` package): chat completions. Structured output
  is a per-provider capability tried in order on the SAME server: `json_schema` (strict), then
  `json_object` with the schema in the system prompt, then the schema in the prompt alone; a mode
  the server refuses (llama-cpp-python's HTTP 500 "Input should be 'text' or 'json_object'", LM
  Studio's 400) moves to the next mode, and the provider keeps the mode that worked for the rest
  of the plan. Servers other than api.openai.com (llama.cpp, vLLM, LM Studio, Ollama's /v1) get the
  schema with its limits, which their grammars enforce.
- Anthropic (`anthropic` package): structured outputs (`output_config.format`), then forced tool use,
  then the schema in the prompt, in the same way (Claude 5.x answers a forced tool_choice with 400).

Timeouts follow progress, not the whole answer: `timeout_s` is the longest silence (no byte of the
answer, the wait for the first token included), and a per-plan `deadline` bounds the total. A
stream given up on is closed, which makes llama.cpp, Ollama and vLLM stop generating (an abandoned
non-streaming request kept a single-slot server busy for minutes). A timed-out call's tokens are
estimated (prompt bytes / 4 in, one token per streamed chunk out) and flagged as estimates.

A provider starts an `Exchange` per role: `send()` returns a `Reply` (the answer's text, the
answering model as the server names it, token usage with cache reads, tokens/s); `add_repair()`
appends the model's answer and the feedback in the shape that API expects. Failures that are not
about the answer raise `ProviderError` with a `kind` taken from what the server said: a 404 that
names the model is `model_missing`, any other 404 is `not_found` (a wrong base URL or path).

Retries: the SDKs' own (`max_retries`, small) handle 429 / 5xx and honour `retry-after`; a
transport guard stops them from retrying when the server asks for a longer wait than
`max_retry_wait_s`, and turns "cannot connect" and a silence past `timeout_s` into immediate
failures, so an offline machine falls through to the next provider in milliseconds. The Ollama
client has no retries; 429/503 (busy) and 5xx get the same small, retry-after-honouring loop here.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai

from .salvage import parse_lenient


@dataclass(frozen=True)
class Settings:
    timeout_s: float = 60.0  # the longest silence: no part of the answer for this long (first token included)
    connect_timeout_s: float = 1.0
    max_retries: int = 1
    max_retry_wait_s: float = 20.0
    max_output_tokens: int = 4096  # the cap for any answer; each role asks for at most its own cap
    temperature: float | None = None  # None: the model's default (reasoning models reject others)
    num_ctx: int = 8192  # Ollama's context window; OpenAI-compatible servers set theirs at launch
    anthropic_output: str = "json_schema"  # or "tool" / "prompt": the first structured-output mode tried
    anthropic_effort: str = ""  # output_config.effort (low | medium | high ...); empty: the model's default
    structured_output: str = "auto"  # OpenAI-compatible: auto (json_schema → json_object → prompt) or one mode
    schema_limits: str = "auto"  # auto: limits where the server's grammar enforces them; on | off


class ProviderError(Exception):
    """The provider did not answer usefully. kind: offline | timeout | rate_limited | server_error |
    model_missing | not_found | auth | bad_request | refused | error."""

    def __init__(self, kind: str, message: str, input_tokens: int = 0, output_tokens: int = 0, *,
                 status: int | None = None, estimated: bool = False, provider_level: bool | None = None):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.status = status
        self.estimated = estimated  # the token counts are estimates (the call did not finish)
        # Whether the failure says something about the provider (down, wrong key, wrong model) rather
        # than about this one request: only those keep it from being asked again in the same plan.
        self.provider_level = (kind in ("offline", "auth", "model_missing", "not_found", "rate_limited")
                               if provider_level is None else provider_level)


class Unreachable(openai.OpenAIError, anthropic.AnthropicError):
    """Raised by the transport guard. Both SDKs pass their own error types through without
    retrying, so connection failures surface at once."""


class TimedOut(Unreachable):
    """The transport guard's read/write timeout: surfaces at once, like Unreachable."""


class OverBudget(Exception):
    """The plan's overall time budget ran out while an answer was streaming."""


@dataclass
class Reply:
    data: Any | None  # the parsed JSON answer, None when it did not parse
    raw: str  # the answer as text (what goes back to the model in a repair round)
    problem: str | None = None  # why data is None
    input_tokens: int = 0
    output_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific bits for the repair round
    model: str = ""  # the model the server says answered
    cache_read_tokens: int = 0  # input tokens served from the prompt cache (counted in input_tokens)
    tokens_per_s: float | None = None  # output tokens over the time from the first to the last token
    mode: str = ""  # the structured-output mode that produced it
    repairs: list[str] = field(default_factory=list)  # what lenient parsing fixed
    notes: list[str] = field(default_factory=list)  # e.g. a structured-output mode the server refused


def retry_after_seconds(headers: Any) -> float | None:
    """`retry-after-ms` / `retry-after` (seconds or an HTTP date), as the SDKs read them."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return email.utils.mktime_tz(parsed) - time.time()


class _Guard(httpx2.BaseTransport):
    """Transport wrapper for the OpenAI / Anthropic SDKs (see the module doc string)."""

    def __init__(self, inner: httpx2.BaseTransport, max_wait_s: float, timeout_s: float):
        self._inner = inner
        self._max_wait_s = max_wait_s
        self._timeout_s = timeout_s

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = self._inner.handle_request(request)
        except (httpx2.ConnectError, httpx2.ConnectTimeout) as error:
            where = f"{request.url.scheme}://{request.url.host}:{request.url.port or ''}".rstrip(":")
            raise Unreachable(f"cannot connect to {where} ({type(error).__name__}: {error})") from None
        except httpx2.TimeoutException:
            # A silent server is not retried (that would double the wait); the next provider gets the job.
            raise TimedOut(f"no answer for {self._timeout_s:g} s") from None
        wait = retry_after_seconds(response.headers)
        if wait is not None and wait > self._max_wait_s:
            response.headers["x-should-retry"] = "false"
        return response

    def close(self) -> None:
        self._inner.close()


def _http_client(settings: Settings) -> httpx2.Client:
    return httpx2.Client(transport=_Guard(httpx2.HTTPTransport(), settings.max_retry_wait_s, settings.timeout_s),
                         timeout=httpx2.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
                         follow_redirects=True)


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def estimate_tokens(messages: Any) -> int:
    """About a token per 4 bytes of UTF-8: for calls that ended before the server counted."""
    return max(1, len(json.dumps(messages, ensure_ascii=False).encode()) // 4)


class _Progress:
    """What a streaming answer has delivered so far, and whether the plan's budget allows more."""

    def __init__(self, deadline: float | None):
        self.deadline = deadline
        self.started = time.monotonic()
        self.first: float | None = None
        self.last: float | None = None
        self.chunks = 0
        self.parts: list[str] = []

    def tick(self, text: str = "", token: bool = False) -> None:
        """Called for every streamed event; `text` (or token=True) counts as a token of output."""
        now = time.monotonic()
        if text:
            self.parts.append(text)
        if text or token:
            self.chunks += 1
            self.first = self.first or now
            self.last = now
        if self.deadline is not None and now > self.deadline:
            raise OverBudget

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def rate(self, output_tokens: int) -> float | None:
        if self.first is None or self.last is None or output_tokens <= 1:
            return None
        span = self.last - self.first
        return round((output_tokens - 1) / span, 2) if span > 0 else None


SCHEMA_PROMPT = ("\n\n## Answer format\nAnswer with exactly one JSON object and nothing else (no prose, no code "
                 "fence). It must follow this JSON schema, limits included:\n")

# Server messages that say a structured-output mode (not the request as such) is the problem.
_MODE_REFUSED = re.compile(r"response_format|json_schema|json_object|output_config|tool_choice|\btools?\b|schema|"
                           r"grammar|input should be|not supported|unsupported|format", re.IGNORECASE)


class Exchange(ABC):
    """One role's conversation with one provider."""

    def __init__(self, provider: Provider, system: str, user: str, tool_name: str, schema: dict[str, Any],
                 limited_schema: dict[str, Any] | None = None):
        self.provider = provider
        self.system = system
        self.tool_name = tool_name
        self.strict_schema = schema
        self.limited_schema = limited_schema or schema
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user}]

    @property
    def schema(self) -> dict[str, Any]:
        """The schema this provider is sent: with limits where its grammar enforces them."""
        return self.limited_schema if self.provider.enforces_limits else self.strict_schema

    def system_for(self, mode: str) -> str:
        if mode in ("json_object", "prompt", "json"):
            return self.system + SCHEMA_PROMPT + json.dumps(self.limited_schema, ensure_ascii=False)
        return self.system

    def send(self, max_tokens: int | None = None, deadline: float | None = None) -> Reply:
        """The answer, moving down the provider's structured-output modes on this same server
        when one is refused."""
        provider = self.provider
        notes: list[str] = []
        while True:
            mode = provider.modes[provider.mode_index]
            try:
                reply = self._send(mode, max_tokens or provider.settings.max_output_tokens, deadline)
            except ProviderError as error:
                if provider.mode_index + 1 < len(provider.modes) and self._mode_refused(error):
                    following = provider.modes[provider.mode_index + 1]
                    notes.append(f"{mode} refused ({_short(error.message, 160)}); {following} used")
                    provider.mode_index += 1
                    continue
                raise
            reply.mode, reply.notes = mode, notes + reply.notes
            return reply

    def _mode_refused(self, error: ProviderError) -> bool:
        if error.kind not in ("bad_request", "server_error", "error"):
            return False
        return bool(_MODE_REFUSED.search(error.message)) or (not self.provider.official and error.status in
                                                            (400, 415, 422))

    @abstractmethod
    def _send(self, mode: str, max_tokens: int, deadline: float | None) -> Reply: ...

    def add_repair(self, reply: Reply, feedback: str) -> None:
        self.messages += [{"role": "assistant", "content": reply.raw or "(empty)"},
                          {"role": "user", "content": feedback}]

    def _reply(self, text: str, cut_off: bool, max_tokens: int, **values: Any) -> Reply:
        if cut_off:
            return Reply(None, text, f"the answer was cut off at {max_tokens} tokens; write less", **values)
        data, problem, repairs = parse_lenient(text)
        return Reply(data, text, problem, repairs=repairs, **values)

    def _timed_out(self, progress: _Progress, why: str) -> ProviderError:
        return ProviderError("timeout", why, estimate_tokens([self.system, self.messages]), progress.chunks,
                             estimated=True, provider_level=False)


class Provider(ABC):
    name: str
    official = True  # the vendor's own API (its schema subset, no grammar limits)
    local = False  # runs on the user's machine: costs nothing
    default_modes: tuple[str, ...] = ("json_schema",)

    def __init__(self, model: str, settings: Settings):
        self.model = model
        self.settings = settings
        self.modes = self.pick_modes()
        self.mode_index = 0

    def pick_modes(self) -> tuple[str, ...]:
        return self.default_modes

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model}"

    @property
    def enforces_limits(self) -> bool:
        """Send the schema with maxLength / item counts: to servers whose grammar enforces them."""
        if self.settings.schema_limits in ("on", "off"):
            return self.settings.schema_limits == "on"
        return not self.official

    @property
    def unavailable(self) -> str | None:
        """Why this provider is not configured (None when it is)."""
        return None

    @abstractmethod
    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any],
                 limited_schema: dict[str, Any] | None = None) -> Exchange: ...

    def close(self) -> None:  # noqa: B027 (optional: providers holding a client close it)
        pass


# ---------------------------------------------------------------- Ollama

class OllamaProvider(Provider):
    name = "ollama"
    official = False  # llama.cpp's grammar under `format` enforces the schema's limits
    local = True
    default_modes = ("schema", "json", "prompt")

    def __init__(self, host: str, model: str, settings: Settings):
        super().__init__(model, settings)
        self.host = host
        self._last_retry_after: float | None = None
        self._client: ollama.Client | None = None

    @property
    def unavailable(self) -> str | None:
        return None if self.host else "disabled (ollama_host is 'off')"

    @property
    def client(self) -> ollama.Client:
        if self._client is None:
            self._client = ollama.Client(
                host=self.host, timeout=httpx.Timeout(self.settings.timeout_s, connect=self.settings.connect_timeout_s),
                event_hooks={"response": [self._remember_retry_after]})
        return self._client

    def _remember_retry_after(self, response: httpx.Response) -> None:
        self._last_retry_after = retry_after_seconds(response.headers)

    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any],
                 limited_schema: dict[str, Any] | None = None) -> Exchange:
        return _OllamaExchange(self, system, user, tool_name, schema, limited_schema)

    def chat(self, messages: list[dict[str, Any]], fmt: Any, max_tokens: int, on_part: Callable[[Any], None]) -> None:
        """Stream one answer into on_part, with the busy / server-error retry loop."""
        s = self.settings
        for attempt in range(s.max_retries + 1):
            self._last_retry_after = None
            try:
                stream = self.client.chat(
                    model=self.model, messages=messages, stream=True, **({"format": fmt} if fmt else {}),
                    options={"num_predict": max_tokens, "num_ctx": s.num_ctx,
                             **({"temperature": s.temperature} if s.temperature is not None else {})})
                try:
                    for part in stream:
                        on_part(part)
                finally:
                    close = getattr(stream, "close", None)
                    if close:
                        close()  # closing the connection stops the generation on the server
                return
            except ollama.ResponseError as error:
                # Like the cloud SDKs: busy (429/503) and server errors (a crashed runner reloads) get
                # max_retries more tries, after retry-after or an exponential backoff.
                retryable = error.status_code in (429, 500, 502, 503, 504)
                wait = self._last_retry_after if self._last_retry_after is not None else 0.5 * 2 ** attempt
                if retryable and attempt < s.max_retries and 0 <= wait <= s.max_retry_wait_s:
                    time.sleep(wait)
                    continue
                raise self._error(error) from None
            except (ConnectionError, httpx.ConnectError):
                raise ProviderError("offline", f"cannot connect to Ollama at {self.host}") from None
            except httpx.ConnectTimeout:
                raise ProviderError("offline", f"connecting to Ollama at {self.host} timed out "
                                               f"after {s.connect_timeout_s:g} s") from None
            except (httpx.HTTPError, ValueError) as error:
                if isinstance(error, httpx.TimeoutException):
                    raise
                raise ProviderError("error", _short(f"{type(error).__name__}: {error}")) from None
        raise AssertionError("unreachable")

    def _error(self, error: ollama.ResponseError) -> ProviderError:
        code, message = error.status_code, _short(error.error)
        if code == 404:
            if "model" in message.lower() and ("not found" in message.lower() or "pull" in message.lower()):
                return ProviderError("model_missing", f"{message}{self._available_models_hint()}", status=code)
            return ProviderError("not_found", f"HTTP 404 {message}; is {self.host} an Ollama server?", status=code)
        if code in (429, 503):
            wait = f", retry-after {self._last_retry_after:g} s" if self._last_retry_after is not None else ""
            return ProviderError("rate_limited", f"HTTP {code} {message}{wait}", status=code)
        if code >= 500:
            return ProviderError("server_error", f"HTTP {code} {message}", status=code)
        if code in (401, 403):
            return ProviderError("auth", f"HTTP {code} {message}", status=code)
        if code == 400:
            return ProviderError("bad_request", f"HTTP {code} {message}", status=code)
        return ProviderError("error", f"HTTP {code} {message}", status=code)

    def _available_models_hint(self) -> str:
        try:
            names = [m.model for m in self.client.list().models if m.model]
        except Exception:
            return f"; pull it with `ollama pull {self.model}`"
        return f"; this server has {', '.join(names) or 'no models'}; pull it with `ollama pull {self.model}`"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _OllamaExchange(Exchange):
    provider: OllamaProvider

    def _send(self, mode: str, max_tokens: int, deadline: float | None) -> Reply:
        p = self.provider
        fmt = {"schema": self.schema, "json": "json"}.get(mode)
        progress = _Progress(deadline)
        final: dict[str, Any] = {}

        def on_part(part: Any) -> None:
            progress.tick(part.message.content or "" if part.message else "")
            if part.done:
                final.update(model=part.model or "", input_tokens=part.prompt_eval_count or 0,
                             output_tokens=part.eval_count or 0, done_reason=part.done_reason)

        messages = [{"role": "system", "content": self.system_for(mode)}, *self.messages]
        try:
            p.chat(messages, fmt, max_tokens, on_part)
        except OverBudget:
            raise self._timed_out(progress, "the plan's time budget ran out while the answer streamed") from None
        except httpx.TimeoutException:
            raise self._timed_out(progress, f"no part of the answer for {p.settings.timeout_s:g} s") from None
        output = final.get("output_tokens") or progress.chunks
        return self._reply(progress.text, final.get("done_reason") == "length", max_tokens,
                           input_tokens=final.get("input_tokens", 0), output_tokens=output,
                           model=final.get("model") or p.model, tokens_per_s=progress.rate(output))


# ---------------------------------------------------------------- OpenAI

def _status_error(error: Any, vendor: str) -> ProviderError:
    """Map an OpenAI / Anthropic APIStatusError to a ProviderError, by what the server said."""
    code = error.status_code
    body = getattr(error, "body", None)
    detail = error.message
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            detail = inner["message"]
        elif isinstance(inner, str):
            detail = inner
    detail = _short(f"HTTP {code} {detail}")
    if code == 429:
        wait = retry_after_seconds(error.response.headers)
        return ProviderError("rate_limited", detail + (f" (retry-after {wait:g} s)" if wait is not None else ""),
                             status=code)
    if code == 404:
        text = detail.lower()
        if "model" in text or "not_found_error" in str(body):
            return ProviderError("model_missing", detail, status=code)
        url = getattr(getattr(error, "request", None), "url", "")
        return ProviderError("not_found", f"{detail}; check the base URL ({url} has no such endpoint; "
                                          "OpenAI-compatible servers usually serve /v1)", status=code)
    if code in (401, 403):
        return ProviderError("auth", f"HTTP {code}: the {vendor} API key was refused", status=code)
    if code in (400, 413, 415, 422):
        return ProviderError("bad_request", detail, status=code)
    if code >= 500:
        return ProviderError("server_error", detail, status=code)
    return ProviderError("error", detail, status=code)


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, api_key: str, base_url: str, model: str, settings: Settings, *, name: str = "openai",
                 local: bool = False):
        self.name = name
        self.local = local
        self.api_key = api_key
        self.base_url = base_url
        super().__init__(model, settings)
        self._client: openai.OpenAI | None = None

    def pick_modes(self) -> tuple[str, ...]:
        chosen = self.settings.structured_output
        order = ("json_schema", "json_object", "prompt")
        return order[order.index(chosen):] if chosen in order else order

    @property
    def unavailable(self) -> str | None:
        if not self.api_key and not self.base_url:
            return "no OPENAI_API_KEY"
        return None

    @property
    def official(self) -> bool:  # type: ignore[override]
        return not self.base_url or "api.openai.com" in self.base_url

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            s = self.settings
            kwargs: dict[str, Any] = {"base_url": self.base_url} if self.base_url else {}
            # Local OpenAI-compatible servers (Ollama /v1, vLLM, llama.cpp) ignore the key but the SDK needs one.
            self._client = openai.OpenAI(
                api_key=self.api_key or "unused", max_retries=s.max_retries,
                timeout=openai.Timeout(s.timeout_s, connect=s.connect_timeout_s),
                http_client=_http_client(s), **kwargs)
        return self._client

    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any],
                 limited_schema: dict[str, Any] | None = None) -> Exchange:
        return _OpenAIExchange(self, system, user, tool_name, schema, limited_schema)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


def _sdk_errors(error: Exception, vendor: str, s: Settings) -> ProviderError:
    """The SDK-level failures both cloud SDKs share, as ProviderErrors."""
    sdk = openai if vendor == "OpenAI" else anthropic
    if isinstance(error, TimedOut):
        return ProviderError("timeout", str(error), provider_level=False)
    if isinstance(error, Unreachable):
        return ProviderError("offline", str(error))
    if isinstance(error, sdk.APITimeoutError):
        return ProviderError("timeout", f"no answer for {s.timeout_s:g} s", provider_level=False)
    if isinstance(error, sdk.APIConnectionError):
        return ProviderError("offline", _short(f"{error} ({error.__cause__ or ''})"))
    if isinstance(error, sdk.APIStatusError):
        return _status_error(error, vendor)
    return ProviderError("error", _short(f"{type(error).__name__}: {error}"))


class _OpenAIExchange(Exchange):
    provider: OpenAIProvider

    def _send(self, mode: str, max_tokens: int, deadline: float | None) -> Reply:
        p, s = self.provider, self.provider.settings
        # api.openai.com wants max_completion_tokens; OpenAI-compatible servers read max_tokens.
        kwargs: dict[str, Any] = {"max_completion_tokens" if p.official else "max_tokens": max_tokens}
        if s.temperature is not None:
            kwargs["temperature"] = s.temperature
        if mode == "json_schema":
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": self.tool_name, "strict": True, "schema": self.schema}}
        elif mode == "json_object":
            kwargs["response_format"] = {"type": "json_object"}
        messages = [{"role": "system", "content": self.system_for(mode)}, *self.messages]
        progress = _Progress(deadline)
        usage: Any = None
        model, finish, refusal = "", None, ""
        stream = None
        try:
            stream = p.client.chat.completions.create(model=p.model, messages=messages, stream=True,
                                                      stream_options={"include_usage": True}, **kwargs)
            for chunk in stream:
                model = chunk.model or model
                usage = chunk.usage or usage
                text = ""
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is not None:
                        text += delta.content or ""
                        refusal += getattr(delta, "refusal", None) or ""
                    finish = choice.finish_reason or finish
                progress.tick(text)
        except OverBudget:
            raise self._timed_out(progress, "the plan's time budget ran out while the answer streamed") from None
        except (httpx2.TimeoutException, TimedOut, openai.APITimeoutError):
            raise self._timed_out(progress, f"no part of the answer for {s.timeout_s:g} s") from None
        except (openai.OpenAIError, httpx2.HTTPError) as error:
            if isinstance(error, httpx2.HTTPError):
                raise ProviderError("error", _short(f"{type(error).__name__}: {error}")) from None
            raise _sdk_errors(error, "OpenAI", s) from None
        finally:
            if stream is not None:
                stream.close()  # an abandoned stream stops the generation on the server
        tokens_in = getattr(usage, "prompt_tokens", 0) or 0
        tokens_out = getattr(usage, "completion_tokens", 0) or 0
        estimated = usage is None
        if estimated:  # servers that ignore stream_options send no usage
            tokens_in, tokens_out = estimate_tokens(messages), progress.chunks
        details = getattr(usage, "prompt_tokens_details", None)
        values = dict(input_tokens=tokens_in, output_tokens=tokens_out, model=model or p.model,
                      cache_read_tokens=getattr(details, "cached_tokens", 0) or 0,
                      tokens_per_s=progress.rate(tokens_out))
        if refusal:
            raise ProviderError("refused", _short(refusal), tokens_in, tokens_out, provider_level=False)
        if progress.chunks == 0 and finish is None:
            raise ProviderError("error", "the response has no choices", tokens_in, tokens_out)
        reply = self._reply(progress.text, finish == "length", max_tokens, **values)
        if estimated:
            reply.notes.append("the server sent no token usage; tokens estimated")
        return reply


# ---------------------------------------------------------------- Anthropic

class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, api_key: str, base_url: str, model: str, settings: Settings):
        self.api_key = api_key
        self.base_url = base_url
        super().__init__(model, settings)
        self._client: anthropic.Anthropic | None = None

    def pick_modes(self) -> tuple[str, ...]:
        order = ("json_schema", "tool", "prompt")
        chosen = self.settings.anthropic_output
        return order[order.index(chosen):] if chosen in order else order

    @property
    def official(self) -> bool:  # type: ignore[override]
        return not self.base_url or "api.anthropic.com" in self.base_url

    @property
    def enforces_limits(self) -> bool:
        # Anthropic's structured outputs reject length limits; gateways in front of it may pass them on.
        return self.settings.schema_limits == "on"

    @property
    def unavailable(self) -> str | None:
        return None if self.api_key else "no ANTHROPIC_API_KEY"

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            s = self.settings
            kwargs: dict[str, Any] = {"base_url": self.base_url} if self.base_url else {}
            self._client = anthropic.Anthropic(
                api_key=self.api_key, max_retries=s.max_retries,
                timeout=anthropic.Timeout(s.timeout_s, connect=s.connect_timeout_s),
                http_client=_http_client(s), **kwargs)
        return self._client

    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any],
                 limited_schema: dict[str, Any] | None = None) -> Exchange:
        return _AnthropicExchange(self, system, user, tool_name, schema, limited_schema)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _AnthropicExchange(Exchange):
    provider: AnthropicProvider

    def _send(self, mode: str, max_tokens: int, deadline: float | None) -> Reply:
        p, s = self.provider, self.provider.settings
        kwargs: dict[str, Any] = {}
        if mode == "tool":
            # Older models: the schema as a tool's input_schema, that tool forced.
            kwargs = {"tools": [{"name": self.tool_name, "input_schema": self.schema,
                                 "description": "Record the answer. Call this exactly once with the complete answer."}],
                      "tool_choice": {"type": "tool", "name": self.tool_name, "disable_parallel_tool_use": True}}
        elif mode == "json_schema":
            kwargs = {"output_config": {"format": {"type": "json_schema", "schema": self.schema},
                                        **({"effort": s.anthropic_effort} if s.anthropic_effort else {})}}
        if s.temperature is not None:  # this SDK's create() has no temperature parameter; the API reads it
            kwargs["extra_body"] = {"temperature": s.temperature}
        progress = _Progress(deadline)
        state: dict[str, Any] = {"model": "", "input": 0, "cache_read": 0, "cache_write": 0, "output": 0,
                                 "stop": None, "tool": None, "tool_json": [], "usage_seen": False}
        stream = None
        try:
            stream = p.client.messages.create(model=p.model, max_tokens=max_tokens, system=self.system_for(mode),
                                              messages=self.messages, stream=True, **kwargs)
            for event in stream:
                self._event(event, state, progress)
        except OverBudget:
            raise self._timed_out(progress, "the plan's time budget ran out while the answer streamed") from None
        except (httpx2.TimeoutException, TimedOut, anthropic.APITimeoutError):
            raise self._timed_out(progress, f"no part of the answer for {s.timeout_s:g} s") from None
        except (anthropic.AnthropicError, httpx2.HTTPError) as error:
            if isinstance(error, httpx2.HTTPError):
                raise ProviderError("error", _short(f"{type(error).__name__}: {error}")) from None
            raise _sdk_errors(error, "Anthropic", s) from None
        finally:
            if stream is not None:
                stream.close()
        # Cache reads and writes are input too: input_tokens alone is only the uncached rest.
        tokens_in = state["input"] + state["cache_read"] + state["cache_write"]
        values = dict(input_tokens=tokens_in, output_tokens=state["output"], model=state["model"] or p.model,
                      cache_read_tokens=state["cache_read"], tokens_per_s=progress.rate(state["output"]))
        if state["stop"] == "refusal":
            raise ProviderError("refused", "the model declined to answer", tokens_in, state["output"],
                                provider_level=False)
        cut_off = state["stop"] == "max_tokens"
        if mode != "tool" or state["tool"] is None:
            reply = self._reply(progress.text.strip(), cut_off, max_tokens, **values)
            if mode == "tool" and reply.data is None:
                reply.problem = f"no {self.tool_name} tool call in the answer"
            return reply
        raw = "".join(state["tool_json"]) or "{}"
        reply = self._reply(raw, cut_off, max_tokens, **values)
        tool = state["tool"]
        reply.extra = {"tool_use": {"type": "tool_use", "id": tool["id"], "name": tool["name"],
                                    "input": reply.data if isinstance(reply.data, dict) else {}}}
        return reply

    def _event(self, event: Any, state: dict[str, Any], progress: _Progress) -> None:
        kind = event.type
        if kind == "message_start":
            message = event.message
            state["model"] = message.model or ""
            self._usage(message.usage, state)
            progress.tick()
        elif kind == "content_block_start":
            block = event.content_block
            if block.type == "tool_use" and block.name == self.tool_name:
                state["tool"] = {"id": block.id, "name": block.name}
            progress.tick()
        elif kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                progress.tick(delta.text)
            elif delta.type == "input_json_delta" and state["tool"] is not None:
                state["tool_json"].append(delta.partial_json)
                progress.tick(token=True)
            else:
                progress.tick()
        elif kind == "message_delta":
            state["stop"] = event.delta.stop_reason or state["stop"]
            self._usage(event.usage, state)
            progress.tick()

    @staticmethod
    def _usage(usage: Any, state: dict[str, Any]) -> None:
        if usage is None:
            return
        for key, name in (("input", "input_tokens"), ("cache_read", "cache_read_input_tokens"),
                          ("cache_write", "cache_creation_input_tokens"), ("output", "output_tokens")):
            value = getattr(usage, name, None)
            if value:
                state[key] = value

    def add_repair(self, reply: Reply, feedback: str) -> None:
        tool_use = reply.extra.get("tool_use")
        if tool_use is None:
            super().add_repair(reply, feedback)
            return
        # After a tool_use block the API expects its tool_result in the next user turn.
        self.messages += [
            {"role": "assistant", "content": [tool_use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use["id"], "is_error": True,
                                          "content": feedback}]},
        ]
