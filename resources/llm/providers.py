"""One class per LLM API, each speaking it through the vendor's own SDK and its own structured-output
mechanism:

- Ollama (`ollama` package): `/api/chat` with `format=<JSON schema>` (grammar-constrained decoding).
- OpenAI (`openai` package): chat completions with `response_format` json_schema, strict. With a
  custom `base_url` it also talks to Ollama's (or vLLM's) OpenAI-compatible `/v1` endpoint.
- Anthropic (`anthropic` package): structured outputs (`output_config.format` = json_schema), the
  answer arriving as a text block. Current Sonnets (5.x) think by default and answer a forced
  `tool_choice` with a 400, so forced tool use (the schema as the tool's `input_schema`, the answer
  as the tool call's `input`) is the `anthropic_output="tool"` mode for older models and gateways.
  (This SDK's Messages API has no `temperature`.)

A provider starts an `Exchange` per role: `send()` returns a `Reply` (the parsed JSON, or why it
did not parse, plus token usage); `add_repair()` appends the model's bad answer and the validation
errors in the shape that API expects, for the one repair round. Failures that are not about the
answer (offline, timeout, 429, 5xx, missing model, bad key) raise `ProviderError` with a `kind`.

Retries: the SDKs' own (`max_retries`, small) handle 429 / 5xx and honour `retry-after`; a
transport guard stops them from retrying when the server asks for a longer wait than
`max_retry_wait_s` (we fall through to the next provider instead), and turns "cannot connect" and
"no answer within timeout_s" into immediate failures instead of retries after backoff, so a
machine that is offline falls through to the next provider in milliseconds and a stuck one after
one timeout. The Ollama client has no retries; 429/503 (busy) and 5xx get the same small,
retry-after-honouring loop here.
"""

from __future__ import annotations

import email.utils
import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import httpx2
import ollama
import openai


@dataclass(frozen=True)
class Settings:
    timeout_s: float = 60.0
    connect_timeout_s: float = 1.0
    max_retries: int = 1
    max_retry_wait_s: float = 20.0
    max_output_tokens: int = 8192
    temperature: float | None = None  # None: the model's default (reasoning models reject others)
    ollama_num_ctx: int = 8192
    anthropic_output: str = "json_schema"  # or "tool" (forced tool use, for models before structured outputs)
    anthropic_effort: str = ""  # output_config.effort (low | medium | high ...); empty: the model's default


class ProviderError(Exception):
    """The provider did not answer usefully. kind: offline | timeout | rate_limited | server_error |
    model_missing | auth | bad_request | refused | error."""

    def __init__(self, kind: str, message: str, input_tokens: int = 0, output_tokens: int = 0):
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens


class Unreachable(openai.OpenAIError, anthropic.AnthropicError):
    """Raised by the transport guard. Both SDKs pass their own error types through without
    retrying, so connection failures surface at once."""


class TimedOut(Unreachable):
    """The transport guard's read/write timeout: surfaces at once, like Unreachable."""


@dataclass
class Reply:
    data: Any | None  # the parsed JSON answer, None when it did not parse
    raw: str  # the answer as text (what goes back to the model in a repair round)
    problem: str | None = None  # why data is None
    input_tokens: int = 0
    output_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific bits for the repair round


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
            # A generation that outlived timeout_s is not retried (that would double the wait);
            # the next provider gets the job.
            raise TimedOut(f"no answer within {self._timeout_s:g} s") from None
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


def parse_json(text: str) -> tuple[Any | None, str | None]:
    try:
        return json.loads(text), None
    except (json.JSONDecodeError, TypeError) as error:
        snippet = (text or "")[:80].replace("\n", " ")
        return None, f"the answer is not valid JSON ({error}); it began: {snippet!r}"


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Exchange(ABC):
    """One role's conversation with one provider."""

    def __init__(self, provider: Provider, system: str, user: str, tool_name: str, schema: dict[str, Any]):
        self.provider = provider
        self.system = system
        self.tool_name = tool_name
        self.schema = schema
        self.messages: list[dict[str, Any]] = [{"role": "user", "content": user}]

    @abstractmethod
    def send(self) -> Reply: ...

    def add_repair(self, reply: Reply, feedback: str) -> None:
        self.messages += [{"role": "assistant", "content": reply.raw or "(empty)"},
                          {"role": "user", "content": feedback}]


class Provider(ABC):
    name: str

    def __init__(self, model: str, settings: Settings):
        self.model = model
        self.settings = settings

    @property
    def label(self) -> str:
        return f"{self.name}:{self.model}"

    @property
    def unavailable(self) -> str | None:
        """Why this provider is not configured (None when it is)."""
        return None

    @abstractmethod
    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any]) -> Exchange: ...

    def close(self) -> None:
        pass


# ---------------------------------------------------------------- Ollama

class OllamaProvider(Provider):
    name = "ollama"

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

    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any]) -> Exchange:
        return _OllamaExchange(self, system, user, tool_name, schema)

    def chat(self, messages: list[dict[str, Any]], schema: dict[str, Any]) -> ollama.ChatResponse:
        s = self.settings
        for attempt in range(s.max_retries + 1):
            self._last_retry_after = None
            try:
                return self.client.chat(
                    model=self.model, messages=messages, format=schema, stream=False,
                    options={"num_predict": s.max_output_tokens, "num_ctx": s.ollama_num_ctx,
                             **({"temperature": s.temperature} if s.temperature is not None else {})})
            except ollama.ResponseError as error:
                # Like the cloud SDKs: busy (429/503) and server errors (a crashed runner reloads) get
                # max_retries more tries, after retry-after or an exponential backoff.
                retryable = error.status_code in (429, 500, 502, 503, 504)
                wait = self._last_retry_after if self._last_retry_after is not None else 0.5 * 2 ** attempt
                if retryable and attempt < s.max_retries and 0 <= wait <= s.max_retry_wait_s:
                    time.sleep(wait)
                    continue
                raise self._error(error) from None
            except ConnectionError:
                raise ProviderError("offline", f"cannot connect to Ollama at {self.host}") from None
            except httpx.ConnectTimeout:
                raise ProviderError("offline", f"connecting to Ollama at {self.host} timed out "
                                               f"after {s.connect_timeout_s:g} s") from None
            except httpx.TimeoutException:
                raise ProviderError("timeout", f"no answer within {s.timeout_s:g} s") from None
            except (httpx.HTTPError, ValueError) as error:
                raise ProviderError("error", _short(f"{type(error).__name__}: {error}")) from None
        raise AssertionError("unreachable")

    def _error(self, error: ollama.ResponseError) -> ProviderError:
        code, message = error.status_code, _short(error.error)
        if code == 404:
            return ProviderError("model_missing", f"{message}{self._available_models_hint()}")
        if code in (429, 503):
            wait = f", retry-after {self._last_retry_after:g} s" if self._last_retry_after is not None else ""
            return ProviderError("rate_limited", f"HTTP {code} {message}{wait}")
        if code >= 500:
            return ProviderError("server_error", f"HTTP {code} {message}")
        if code in (401, 403):
            return ProviderError("auth", f"HTTP {code} {message}")
        if code == 400:
            return ProviderError("bad_request", f"HTTP {code} {message}")
        return ProviderError("error", f"HTTP {code} {message}")

    def _available_models_hint(self) -> str:
        try:
            names = [m.model for m in self.client.list().models if m.model]
        except Exception:  # noqa: BLE001 - only a hint for the message
            return f"; pull it with `ollama pull {self.model}`"
        return f"; this server has {', '.join(names) or 'no models'}; pull it with `ollama pull {self.model}`"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _OllamaExchange(Exchange):
    provider: OllamaProvider

    def __init__(self, provider: OllamaProvider, system: str, user: str, tool_name: str, schema: dict[str, Any]):
        super().__init__(provider, system, user, tool_name, schema)
        self.messages.insert(0, {"role": "system", "content": system})

    def send(self) -> Reply:
        response = self.provider.chat(self.messages, self.schema)
        text = response.message.content or ""
        usage = {"input_tokens": response.prompt_eval_count or 0, "output_tokens": response.eval_count or 0}
        if response.done_reason == "length":
            return Reply(None, text, f"the answer was cut off at {self.provider.settings.max_output_tokens} tokens; "
                                     "write less", **usage)
        data, problem = parse_json(text)
        return Reply(data, text, problem, **usage)


# ---------------------------------------------------------------- OpenAI

def _status_error(error: Any, vendor: str) -> ProviderError:
    """Map an OpenAI / Anthropic APIStatusError to a ProviderError."""
    code = error.status_code
    body = getattr(error, "body", None)
    detail = error.message
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            detail = inner["message"]
    detail = _short(f"HTTP {code} {detail}")
    if code == 429:
        wait = retry_after_seconds(error.response.headers)
        return ProviderError("rate_limited", detail + (f" (retry-after {wait:g} s)" if wait is not None else ""))
    if code == 404:
        return ProviderError("model_missing", detail)
    if code in (401, 403):
        return ProviderError("auth", f"HTTP {code}: the {vendor} API key was refused")
    if code in (400, 413, 422):
        return ProviderError("bad_request", detail)
    if code >= 500:
        return ProviderError("server_error", detail)
    return ProviderError("error", detail)


class OpenAIProvider(Provider):
    name = "openai"

    def __init__(self, api_key: str, base_url: str, model: str, settings: Settings):
        super().__init__(model, settings)
        self.api_key = api_key
        self.base_url = base_url
        self._client: openai.OpenAI | None = None

    @property
    def unavailable(self) -> str | None:
        if not self.api_key and not self.base_url:
            return "no OPENAI_API_KEY"
        return None

    @property
    def official(self) -> bool:
        return not self.base_url or "api.openai.com" in self.base_url

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            s = self.settings
            kwargs: dict[str, Any] = {"base_url": self.base_url} if self.base_url else {}
            # Local OpenAI-compatible servers (Ollama /v1, vLLM) ignore the key but the SDK needs one.
            self._client = openai.OpenAI(
                api_key=self.api_key or "unused", max_retries=s.max_retries,
                timeout=openai.Timeout(s.timeout_s, connect=s.connect_timeout_s),
                http_client=_http_client(s), **kwargs)
        return self._client

    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any]) -> Exchange:
        return _OpenAIExchange(self, system, user, tool_name, schema)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _OpenAIExchange(Exchange):
    provider: OpenAIProvider

    def __init__(self, provider: OpenAIProvider, system: str, user: str, tool_name: str, schema: dict[str, Any]):
        super().__init__(provider, system, user, tool_name, schema)
        self.messages.insert(0, {"role": "system", "content": system})

    def send(self) -> Reply:
        p, s = self.provider, self.provider.settings
        # api.openai.com wants max_completion_tokens; OpenAI-compatible servers (Ollama) read max_tokens.
        limit = {"max_completion_tokens" if p.official else "max_tokens": s.max_output_tokens}
        try:
            response = p.client.chat.completions.create(
                model=p.model, messages=self.messages,
                **({"temperature": s.temperature} if s.temperature is not None else {}),
                response_format={"type": "json_schema",
                                 "json_schema": {"name": self.tool_name, "strict": True, "schema": self.schema}},
                **limit)
        except TimedOut as error:
            raise ProviderError("timeout", str(error)) from None
        except Unreachable as error:
            raise ProviderError("offline", str(error)) from None
        except openai.APITimeoutError:
            raise ProviderError("timeout", f"no answer within {s.timeout_s:g} s") from None
        except openai.APIConnectionError as error:
            raise ProviderError("offline", _short(f"{error} ({error.__cause__ or ''})")) from None
        except openai.APIStatusError as error:
            raise _status_error(error, "OpenAI") from None
        except openai.OpenAIError as error:
            raise ProviderError("error", _short(f"{type(error).__name__}: {error}")) from None
        usage = {"input_tokens": getattr(response.usage, "prompt_tokens", 0) or 0,
                 "output_tokens": getattr(response.usage, "completion_tokens", 0) or 0}
        if not response.choices:
            raise ProviderError("error", "the response has no choices", **usage)
        choice = response.choices[0]
        if choice.message.refusal:
            raise ProviderError("refused", _short(choice.message.refusal), **usage)
        text = choice.message.content or ""
        if choice.finish_reason == "length":
            return Reply(None, text, f"the answer was cut off at {s.max_output_tokens} tokens; write less", **usage)
        data, problem = parse_json(text)
        return Reply(data, text, problem, **usage)


# ---------------------------------------------------------------- Anthropic

class AnthropicProvider(Provider):
    name = "anthropic"

    def __init__(self, api_key: str, base_url: str, model: str, settings: Settings):
        super().__init__(model, settings)
        self.api_key = api_key
        self.base_url = base_url
        self._client: anthropic.Anthropic | None = None

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

    def exchange(self, system: str, user: str, tool_name: str, schema: dict[str, Any]) -> Exchange:
        return _AnthropicExchange(self, system, user, tool_name, schema)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


class _AnthropicExchange(Exchange):
    provider: AnthropicProvider

    def send(self) -> Reply:
        p, s = self.provider, self.provider.settings
        if s.anthropic_output == "tool":
            # Older models: the schema as a tool's input_schema, that tool forced.
            mode: dict[str, Any] = {
                "tools": [{"name": self.tool_name, "input_schema": self.schema,
                           "description": "Record the answer. Call this exactly once with the complete answer."}],
                "tool_choice": {"type": "tool", "name": self.tool_name, "disable_parallel_tool_use": True}}
        else:
            # Structured outputs: the answer is a text block that follows the schema.
            mode = {"output_config": {"format": {"type": "json_schema", "schema": self.schema},
                                      **({"effort": s.anthropic_effort} if s.anthropic_effort else {})}}
        try:
            response = p.client.messages.create(model=p.model, max_tokens=s.max_output_tokens, system=self.system,
                                                messages=self.messages, **mode)
        except TimedOut as error:
            raise ProviderError("timeout", str(error)) from None
        except Unreachable as error:
            raise ProviderError("offline", str(error)) from None
        except anthropic.APITimeoutError:
            raise ProviderError("timeout", f"no answer within {s.timeout_s:g} s") from None
        except anthropic.APIConnectionError as error:
            raise ProviderError("offline", _short(f"{error} ({error.__cause__ or ''})")) from None
        except anthropic.APIStatusError as error:
            raise _status_error(error, "Anthropic") from None
        except anthropic.AnthropicError as error:
            raise ProviderError("error", _short(f"{type(error).__name__}: {error}")) from None
        usage = {"input_tokens": response.usage.input_tokens or 0, "output_tokens": response.usage.output_tokens or 0}
        cut_off = f"the answer was cut off at {s.max_output_tokens} tokens; write less"
        if response.stop_reason == "refusal":
            raise ProviderError("refused", "the model declined to answer", **usage)
        if s.anthropic_output != "tool":
            text = "".join(b.text for b in response.content if b.type == "text").strip()
            if response.stop_reason == "max_tokens":
                return Reply(None, text, cut_off, **usage)
            data, problem = parse_json(text)
            return Reply(data, text, problem, **usage)
        call = next((b for b in response.content if b.type == "tool_use" and b.name == self.tool_name), None)
        if call is None:
            text = " ".join(getattr(b, "text", "") for b in response.content).strip()
            return Reply(None, text, f"no {self.tool_name} tool call in the answer", **usage)
        raw = json.dumps(call.input, ensure_ascii=False)
        extra = {"tool_use": {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}}
        if response.stop_reason == "max_tokens":
            return Reply(None, raw, cut_off, extra=extra, **usage)
        return Reply(call.input, raw, None, extra=extra, **usage)

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
