"""The Smart LLM Router (spec 2.1, 3.1, 8.2): who writes the storyboard, and what it cost.

Three roles, each with a provider chain:

| role   | what                                      | preferred            |
| ------ | ----------------------------------------- | -------------------- |
| usp    | hard branding: USP, benefits, proof, CTA  | OpenAI (GPT-4o)      |
| draft  | the scene plan: acts, timing, copy, images | local Qwen (Ollama or any OpenAI-compatible server) |
| refine | copy polish: narration, on-screen text, tone | Anthropic (Claude Sonnet 5.5) |

`JobSpec.engine_preference` picks the chains:

- `local`: draft on the local model only; nothing leaves the machine. Falls back to the built-in
  planner. The local model is Ollama's native API, or, when `SPARKLIO_LOCAL_OPENAI_BASE_URL` (or
  `local_openai_base_url`) is set, any OpenAI-compatible server (llama.cpp's `llama-server`, vLLM,
  LM Studio, Ollama's `/v1`) with `SPARKLIO_LOCAL_MODEL`. Local models cost $0.
- `cloud`: usp on OpenAI, draft on OpenAI then Anthropic, refine on Anthropic.
- `hybrid`: the spec's full router: usp on OpenAI, draft on local then OpenAI then Anthropic
  (spec 8.2: Qwen offline → cloud), refine on Anthropic.
- `auto` (default): scaled to `JobSpec.quality` to keep cost down: draft on local then the cloud
  models for every quality; `standard` adds the Claude copy refinement, `premium` also the
  GPT-4o USP extraction.

`SPARKLIO_LLM=off` (or `enabled=False`) switches the router off: the built-in planner, no network.

The draft decides; if no provider in its chain produces a valid plan, the built-in planner writes
it. usp and refine only improve a plan: when they fail, the plan goes on without them. A provider
that is not configured is skipped, one that failed is not asked again within the same plan, every
step is logged and recorded in `metadata.llm_calls`, and `metadata.planner_engine` names what
actually wrote the storyboard, e.g. `ollama:qwen2.5:7b-instruct + anthropic:claude-sonnet-4-5
(refine)` or `builtin (fallback: ollama:qwen2.5:7b-instruct offline; openai: no OPENAI_API_KEY ...)`.

Every answer is schema-constrained by the provider where it can be, then checked field by field
(`salvage.py`): what code can fix is fixed and listed in the call's `code_fixed`; only the fields
code cannot fix go back to the same model in one repair round; a scene still unusable after that is
the built-in planner's scene for the same act (`builtin_scenes`). Only an answer with no usable
scene moves on to the next provider. Copy the model writes is checked against the brief
(`sparklio_assets.copy_safety`): no instruction from the brief echoed, no claim the brief and brand
kit do not make.

Accounting: each call records the model the server says answered, tokens (Anthropic cache reads
included; a timed-out call's tokens estimated and flagged), tokens/s and cost. A failure that is
about the provider (offline, bad key, missing model) keeps it out for the rest of the plan; one
about a single request of an optional step (usp, refine) does not cost the required draft its
provider. Answers stream: `timeout_s` is the longest silence, `plan_budget_s` bounds the plan.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field, ValidationError

from sparklio_assets.copy_safety import safe_brief
from sparklio_assets.models import JobSpec, Storyboard, describe_validation_error
from sparklio_assets.planner import plan_storyboard

from . import prompts
from .providers import AnthropicProvider, OllamaProvider, OpenAIProvider, Provider, ProviderError, Settings
from .salvage import assemble, check_draft, check_refinement, check_strategy, merge
from .schema import draft_schema, refine_schema, storyboard_for_refinement, strategy_schema

logger = logging.getLogger("sparklio.llm")

DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
DEFAULT_MODELS = {"ollama": "qwen2.5:7b-instruct", "openai": "gpt-4o", "anthropic": "claude-sonnet-5-5"}
# USD per 1M tokens, [input, output]. A model matches its own name or the longest entry its name
# starts with ("gpt-4o-2024-08-06" → "gpt-4o"). Models on Ollama cost nothing unless listed.
DEFAULT_PRICES: dict[str, list[float]] = {
    "gpt-4o": [2.50, 10.00],
    "gpt-4o-mini": [0.15, 0.60],
    "gpt-4.1": [2.00, 8.00],
    "gpt-4.1-mini": [0.40, 1.60],
    "claude-sonnet-5-5": [2.00, 10.00],
    "claude-sonnet-5": [2.00, 10.00],
    "claude-sonnet-4-6": [3.00, 15.00],
    "claude-sonnet-4-5": [3.00, 15.00],
    "claude-sonnet-4": [3.00, 15.00],
    "claude-3-5-sonnet": [3.00, 15.00],
    "claude-3-7-sonnet": [3.00, 15.00],
    "claude-haiku-4-5": [1.00, 5.00],
    "qwen2.5:7b-instruct": [0.0, 0.0],
}
TOOL_NAMES = {"usp": "brand_strategy", "draft": "storyboard_draft", "refine": "refined_copy"}
# Output tokens each role may ask for (under max_output_tokens): enough for its JSON with room to
# spare, short enough that a runaway answer ends in seconds-to-minutes, not 10 minutes.
ROLE_OUTPUT_TOKENS = {"usp": 1024, "draft": 4096, "refine": 2048}
# Anthropic and OpenAI bill prompt-cache reads at about a tenth of the input price.
CACHE_READ_PRICE = 0.1


@dataclass(frozen=True)
class Route:
    usp: tuple[str, ...]
    draft: tuple[str, ...]
    refine: tuple[str, ...]


def route_for(preference: str, quality: str) -> Route:
    """Provider chains by name: `local` (Ollama or an OpenAI-compatible local server), `openai`, `anthropic`."""
    if preference == "local":
        return Route((), ("local",), ())
    if preference == "cloud":
        return Route(("openai",), ("openai", "anthropic"), ("anthropic",))
    if preference == "hybrid":
        return Route(("openai",), ("local", "openai", "anthropic"), ("anthropic",))
    return Route(("openai",) if quality == "premium" else (), ("local", "openai", "anthropic"),
                 ("anthropic",) if quality in ("standard", "premium") else ())


def format_usd(amount: float) -> str:
    """Spec 3.1 style ("$0.12"); amounts under a cent keep four decimals so they do not read as free."""
    if amount == 0 or amount >= 0.01:
        return f"${amount:.2f}"
    return f"${amount:.4f}"


def storyboard_cost_usd(plan: Storyboard) -> float:
    """What the storyboard's LLM calls cost (the sum over metadata.llm_calls)."""
    return round(sum(call.get("cost_usd") or 0.0 for call in plan.metadata.llm_calls), 6)


def summarize_calls(calls: list[dict[str, Any]]) -> dict[str, Any]:
    made = [c for c in calls if c.get("outcome") != "skipped"]
    rates = [c["tokens_per_s"] for c in made if c.get("tokens_per_s")]
    return {
        "tokens_per_s": round(sum(rates) / len(rates), 2) if rates else None,
        "calls": len(made),
        "seconds": round(sum(c.get("seconds") or 0.0 for c in made), 3),
        "input_tokens": sum(c.get("input_tokens") or 0 for c in made),
        "output_tokens": sum(c.get("output_tokens") or 0 for c in made),
        "cost_usd": round(sum(c.get("cost_usd") or 0.0 for c in made), 6),
    }


class _Log:
    """Accepts Dagster's context.log, a logging.Logger, a plain callable, or None."""

    def __init__(self, target: Any):
        self.target = target if target is not None else logger

    def _emit(self, level: str, message: str) -> None:
        method = getattr(self.target, level, None)
        if callable(method):
            method(message)
        elif callable(self.target):
            self.target(message)

    def info(self, message: str) -> None:
        self._emit("info", message)

    def warning(self, message: str) -> None:
        self._emit("warning", message)


class LLMRouter(ConfigurableResource):
    """Routes the storyboard to the local model / OpenAI / Anthropic with fallback to the built-in planner.

    Every string setting left empty is read from the environment when a plan starts (so keys are
    never part of the resource's visible config), e.g. `LLMRouter()` or
    `LLMRouter(openai_api_key=EnvVar("MY_KEY"))`.
    """

    ollama_host: str = Field(default="", description="Ollama server. Empty: $OLLAMA_HOST, else "
                                                     f"{DEFAULT_OLLAMA_HOST}. 'off' disables Ollama.")
    ollama_model: str = Field(default="", description="Empty: $SPARKLIO_OLLAMA_MODEL, else "
                                                      f"{DEFAULT_MODELS['ollama']}.")
    local_openai_base_url: str = Field(
        default="", description="Empty: $SPARKLIO_LOCAL_OPENAI_BASE_URL. When set, the local model is this "
                                "OpenAI-compatible server (llama.cpp, vLLM, LM Studio, Ollama's /v1) instead of "
                                "Ollama's native API.")
    local_model: str = Field(default="", description="The model on that server. Empty: $SPARKLIO_LOCAL_MODEL, else "
                                                     "the Ollama model name.")
    openai_api_key: str = Field(default="", description="Empty: $OPENAI_API_KEY.")
    openai_base_url: str = Field(default="", description="Empty: $OPENAI_BASE_URL, else api.openai.com. An "
                                                         "OpenAI-compatible server (Ollama's /v1) needs no key.")
    openai_model: str = Field(default="",
                              description=f"Empty: $SPARKLIO_OPENAI_MODEL, else {DEFAULT_MODELS['openai']}.")
    anthropic_api_key: str = Field(default="", description="Empty: $ANTHROPIC_API_KEY.")
    anthropic_base_url: str = Field(default="", description="Empty: $ANTHROPIC_BASE_URL, else api.anthropic.com.")
    anthropic_model: str = Field(default="", description="Empty: $SPARKLIO_ANTHROPIC_MODEL, else "
                                                         f"{DEFAULT_MODELS['anthropic']}.")
    prices: dict[str, list[float]] = Field(
        default_factory=dict,
        description="USD per 1M [input, output] tokens by model name, over the built-in table and "
                    "$SPARKLIO_LLM_PRICES (JSON of the same shape).")
    timeout_s: float = Field(default=60.0, description="the longest silence while an answer streams (the wait "
                                                       "for its first token, a cold model load, included)")
    plan_budget_s: float = Field(default=900.0, description="all LLM calls of one plan together; then the "
                                                            "built-in planner finishes the job")
    connect_timeout_s: float = Field(default=1.0, description="an unreachable host fails over after this")
    max_retries: int = Field(default=1, description="SDK retries on 429/5xx, honouring retry-after")
    max_retry_wait_s: float = Field(default=20.0, description="a longer retry-after moves on to the next provider")
    max_output_tokens: int = Field(default=4096, description="cap per answer (thinking included); each role "
                                                             f"asks for at most {ROLE_OUTPUT_TOKENS}")
    temperature: float | None = Field(default=None, description="sent the same way on every route; empty: "
                                                                   "each model's default (GPT-5 and Claude 5 "
                                                                   "reject other values)")
    ollama_num_ctx: int = Field(default=8192, description="Ollama context window (its default is too small); "
                                                          "OpenAI-compatible servers set theirs at launch")
    structured_output: str = Field(default="auto", description="OpenAI-compatible servers: auto (json_schema, "
                                                                "then json_object, then prompt-only) or the mode "
                                                                "to start from")
    schema_limits: str = Field(default="auto", description="send maxLength / item counts: auto (to servers whose "
                                                           "grammar enforces them), on, off")
    anthropic_output: str = Field(default="json_schema", description="json_schema (structured outputs), tool "
                                                                     "(forced tool use, pre-4.5 models) or prompt")
    anthropic_effort: str = Field(default="", description="output_config.effort (low | medium | high); "
                                                          "empty: the model's default")

    enabled: bool = Field(default=True, description="False (or $SPARKLIO_LLM=off): always the built-in planner")

    # -------------------------------------------------------------- configuration

    def disabled(self) -> str:
        """Why the router is off ('' when it is on)."""
        if not self.enabled:
            return "LLMRouter.enabled is false"
        if os.environ.get("SPARKLIO_LLM", "").strip().lower() in ("off", "0", "false", "no", "builtin"):
            return "SPARKLIO_LLM=off"
        return ""

    def settings(self) -> Settings:
        return Settings(timeout_s=self.timeout_s, connect_timeout_s=self.connect_timeout_s,
                        max_retries=self.max_retries, max_retry_wait_s=self.max_retry_wait_s,
                        max_output_tokens=self.max_output_tokens, temperature=self.temperature,
                        num_ctx=self.ollama_num_ctx, anthropic_output=self.anthropic_output,
                        anthropic_effort=self.anthropic_effort, structured_output=self.structured_output,
                        schema_limits=self.schema_limits)

    def resolved(self) -> dict[str, str]:
        """The effective hosts and models (no keys)."""
        host = self.ollama_host or os.environ.get("OLLAMA_HOST", "") or DEFAULT_OLLAMA_HOST
        ollama_model = self.ollama_model or os.environ.get("SPARKLIO_OLLAMA_MODEL") or DEFAULT_MODELS["ollama"]
        return {
            "ollama_host": "" if host.strip().lower() in ("off", "none", "disabled") else host.strip(),
            "ollama_model": ollama_model,
            "local_openai_base_url": (self.local_openai_base_url
                                      or os.environ.get("SPARKLIO_LOCAL_OPENAI_BASE_URL", "")).strip(),
            "local_model": self.local_model or os.environ.get("SPARKLIO_LOCAL_MODEL") or ollama_model,
            "openai_base_url": self.openai_base_url or os.environ.get("OPENAI_BASE_URL", ""),
            "openai_model": self.openai_model or os.environ.get("SPARKLIO_OPENAI_MODEL") or DEFAULT_MODELS["openai"],
            "anthropic_base_url": self.anthropic_base_url or os.environ.get("ANTHROPIC_BASE_URL", ""),
            "anthropic_model": (self.anthropic_model or os.environ.get("SPARKLIO_ANTHROPIC_MODEL")
                                or DEFAULT_MODELS["anthropic"]),
        }

    def providers(self) -> dict[str, Provider]:
        """By route name: `local` is Ollama, or the OpenAI-compatible local server when one is set."""
        r, s = self.resolved(), self.settings()
        if r["local_openai_base_url"]:
            local: Provider = OpenAIProvider(os.environ.get("SPARKLIO_LOCAL_API_KEY", ""), r["local_openai_base_url"],
                                             r["local_model"], s, name="local", local=True)
        else:
            local = OllamaProvider(r["ollama_host"], r["ollama_model"], s)
        return {
            "local": local,
            "openai": OpenAIProvider(self.openai_api_key or os.environ.get("OPENAI_API_KEY", ""),
                                     r["openai_base_url"], r["openai_model"], s),
            "anthropic": AnthropicProvider(self.anthropic_api_key or os.environ.get("ANTHROPIC_API_KEY", ""),
                                           r["anthropic_base_url"], r["anthropic_model"], s),
        }

    def price_table(self) -> dict[str, list[float]]:
        table = dict(DEFAULT_PRICES)
        env = os.environ.get("SPARKLIO_LLM_PRICES", "").strip()
        if env:
            try:
                table.update({str(k): [float(x) for x in v] for k, v in json.loads(env).items()})
            except (ValueError, TypeError, AttributeError) as error:
                logger.warning(f"SPARKLIO_LLM_PRICES ignored: {error}")
        table.update(self.prices)
        return table

    def price_of(self, provider: str, model: str, local: bool = False) -> tuple[float, float] | None:
        """USD per 1M tokens [in, out]; a local model costs nothing unless the table prices it."""
        table = self.price_table()
        if model in table:
            return tuple(table[model][:2])  # type: ignore[return-value]
        matches = [name for name in table if model.startswith(name)]
        if matches:
            return tuple(table[max(matches, key=len)][:2])  # type: ignore[return-value]
        return (0.0, 0.0) if local or provider in ("ollama", "local") else None

    # -------------------------------------------------------------- planning

    def plan(self, job: JobSpec, log: Any = None) -> Storyboard:
        """The job's storyboard, by the models the route and the configuration allow, or by the
        built-in planner. Never raises for a provider's failure."""
        run = _PlanRun(self, job, _Log(log))
        try:
            return run.plan()
        finally:
            run.close()


@dataclass
class Checked:
    """One answer after its role's check."""

    value: Any | None  # what can be used (for the draft: possibly with built-in scenes in it)
    problems: list[str]  # fields only the model can fix: the repair round names exactly these
    fixed: list[str]  # what code fixed
    state: Any = None  # the role's check result, merged with the repair answer's
    builtin: list[str] = dataclass_field(default_factory=list)  # scenes the built-in planner wrote


class _PlanRun:
    """One plan(): the providers, what was called, what failed."""

    def __init__(self, router: LLMRouter, job: JobSpec, log: _Log):
        self.router, self.job, self.log = router, job, log
        self.brief, self.brand = job.brief, job.brand_kit
        self.providers = router.providers()
        self.calls: list[dict[str, Any]] = []
        self.down: dict[str, str] = {}  # provider name → why it is not asked again
        self.passed_over: list[str] = []  # the last role's providers that gave nothing, and why
        self.deadline = time.monotonic() + router.plan_budget_s

    def close(self) -> None:
        for provider in self.providers.values():
            try:
                provider.close()
            except Exception:
                pass

    def builtin(self) -> Storyboard:
        return plan_storyboard(safe_brief(self.brief, self.brand), self.brand)

    def plan(self) -> Storyboard:
        started = time.perf_counter()
        off = self.router.disabled()
        if off:
            self.log.info(f"llm router: off ({off}); the built-in planner writes the storyboard")
            return self.finish(self.builtin(), f"builtin (LLM router off: {off})", started)
        route = route_for(self.job.engine_preference, self.job.quality)
        self.log.info(f"llm router: engine_preference={self.job.engine_preference}, quality={self.job.quality}; "
                      f"usp {_chain(route.usp)}, draft {_chain(route.draft)}, refine {_chain(route.refine)}")
        parts: list[str] = []

        strategy = None
        if route.usp:
            found = self.role("usp", route.usp, strategy_schema, self._check_strategy,
                              prompts.user_prompt("usp", self.brief, self.brand))
            if found:
                strategy, provider, _, checked, model = found
                parts.append(f"{provider.name}:{model} (usp)")

        user = prompts.user_prompt("draft", self.brief, self.brand,
                                   strategy=strategy.model_dump() if strategy else None)
        duration = self.brief.duration
        found = self.role("draft", route.draft, lambda limits: draft_schema(limits, duration), self._check_draft, user)
        if found is None:
            reasons = "; ".join(self.passed_over) or "no LLM in the route"
            self.log.warning(f"llm router: no model wrote a usable storyboard; the built-in planner writes it "
                             f"({reasons})")
            return self.finish(self.builtin(), f"builtin (fallback: {reasons})", started)

        plan, draft_provider, fallback, checked, model = found
        notes = []
        if checked.fixed:
            notes.append(f"code fixed {len(checked.fixed)}: " + "; ".join(_field(f) for f in checked.fixed))
        if checked.builtin:
            notes.append("built-in scenes " + ", ".join(checked.builtin))
        if fallback:
            notes.append(f"fallback: {fallback}")
        engine = f"{draft_provider.name}:{model}" + (f" ({'; '.join(notes)})" if notes else "")

        if route.refine:
            refine_chain = tuple(n for n in route.refine if self.providers[n].label != draft_provider.label)
            if not refine_chain:
                self.log.info(f"llm router: refine skipped, {draft_provider.label} wrote the draft itself")
            else:
                ids = [s.id for s in plan.scenes]
                user = prompts.user_prompt("refine", self.brief, self.brand, storyboard=storyboard_for_refinement(plan))
                refined = self.role("refine", refine_chain, lambda limits, ids=ids: refine_schema(ids, limits),
                                    lambda data, previous, plan=plan: self._check_refine(data, plan), user)
                if refined:
                    plan, provider, _, _, model = refined
                    parts.append(f"{provider.name}:{model} (refine)")
        return self.finish(plan, " + ".join([engine, *parts]), started)

    def finish(self, plan: Storyboard, engine: str, started: float) -> Storyboard:
        total = summarize_calls(self.calls)
        metadata = plan.metadata.model_copy(update={
            "planner_engine": engine, "llm_calls": self.calls, "estimated_cost": format_usd(total["cost_usd"])})
        rate = f", {total['tokens_per_s']:g} tokens/s" if total["tokens_per_s"] else ""
        self.log.info(f"llm router: storyboard by {engine}: {len(plan.scenes)} scenes, {total['calls']} LLM calls, "
                      f"{total['input_tokens']} in / {total['output_tokens']} out tokens{rate}, "
                      f"{format_usd(total['cost_usd'])}, {time.perf_counter() - started:.2f} s")
        return plan.model_copy(update={"metadata": metadata})

    # -------------------------------------------------------------- one role

    def role(self, role: str, chain: tuple[str, ...], schema: Callable[[bool], dict[str, Any]],
             check: Callable[[Any, Any], Checked], user: str) -> tuple[Any, Provider, str, Checked, str] | None:
        """Ask each provider in the chain until one gives a usable answer: (value, provider, why the
        earlier ones were passed over, the check, the answering model) or None."""
        system = prompts.system_prompt(role)
        required = role == "draft"
        passed_over = self.passed_over = []
        cap = min(ROLE_OUTPUT_TOKENS[role], self.router.max_output_tokens)
        for name in chain:
            provider = self.providers[name]
            why_not = provider.unavailable or self.down.get(name)
            if not why_not and time.monotonic() > self.deadline:
                why_not = f"skipped: the plan's time budget ({self.router.plan_budget_s:g} s) is spent"
            if why_not:
                self.record(role, provider, "first", "skipped", 0.0, error=why_not)
                passed_over.append(f"{name}: {why_not}" if provider.unavailable else f"{provider.label} {why_not}")
                continue
            exchange = provider.exchange(system, user, TOOL_NAMES[role], schema(False), schema(True))
            problem, previous, usable, reply_first, entry_first = "", None, None, None, {}
            for attempt in ("first", "repair"):
                started = time.perf_counter()
                try:
                    try:
                        reply = exchange.send(cap, self.deadline)
                    except ProviderError:
                        raise
                    except Exception as unexpected:
                        logger.exception(f"llm {role}: unexpected error from {provider.label}")
                        raise ProviderError("error", f"{type(unexpected).__name__}: {unexpected}") from unexpected
                except ProviderError as error:
                    self.record(role, provider, attempt, "error", time.perf_counter() - started, error=str(error),
                                input_tokens=error.input_tokens, output_tokens=error.output_tokens,
                                estimated=error.estimated)
                    if error.provider_level or required:
                        self.down[name] = f"{error.kind} earlier in this plan"
                    problem = error.kind
                    if usable is not None:  # the first answer stands, with built-in scenes where it was unusable
                        self.log.warning(f"llm {role}: the repair round with {provider.label} failed ({error}); "
                                         "keeping its first answer")
                        self._accepted(entry_first, usable)
                        return (usable.value, provider, "; ".join(passed_over), usable,
                                reply_first.model or provider.model)
                    self.log.warning(f"llm {role}: {provider.label} failed ({error}); "
                                     f"{self._next(chain, name, role)}")
                    break
                seconds = time.perf_counter() - started
                checked = self._check(reply, check, previous)
                done = checked.value is not None and (not checked.problems or attempt == "repair")
                self.record(role, provider, attempt, "ok" if done else "invalid", seconds,
                            error="; ".join(checked.problems) or None, input_tokens=reply.input_tokens,
                            output_tokens=reply.output_tokens, reply=reply,
                            estimated="the server sent no token usage; tokens estimated" in reply.notes)
                if done:
                    self._accepted(self.calls[-1], checked)
                    self.log.info(f"llm {role}: {reply.model or provider.model} on {provider.name} answered in "
                                  f"{seconds:.2f} s{' after one repair round' if attempt == 'repair' else ''} "
                                  f"({reply.input_tokens} in / {reply.output_tokens} out tokens, "
                                  f"{format_usd(self.calls[-1]['cost_usd'])})")
                    return checked.value, provider, "; ".join(passed_over), checked, reply.model or provider.model
                problem = "; ".join(checked.problems) or "empty answer"
                if attempt == "first":
                    self.log.warning(f"llm {role}: {provider.label} gave an answer with fields code cannot fix "
                                     f"({problem}); asking it once to repair them")
                    exchange.add_repair(reply, prompts.repair_prompt(problem, checked.fixed))
                    previous, reply_first = checked.state, reply
                    usable = checked if checked.value is not None else None
                    entry_first = self.calls[-1]
                elif usable is not None:  # the repair answer is no use: the first answer stands
                    self.log.warning(f"llm {role}: the repair answer of {provider.label} is unusable ({problem}); "
                                     "keeping its first answer")
                    self._accepted(entry_first, usable)
                    return usable.value, provider, "; ".join(passed_over), usable, reply_first.model or provider.model
                else:
                    self.log.warning(f"llm {role}: {provider.label} is still unusable after the repair round "
                                     f"({problem}); {self._next(chain, name, role)}")
                    problem = "invalid output"
            passed_over.append(f"{provider.label} {problem}")
        return None

    @staticmethod
    def _accepted(call: dict[str, Any], checked: Checked) -> None:
        """Note on the accepted call what code fixed and which scenes the built-in planner wrote."""
        call["outcome"] = "ok"
        call["code_fixed"] = list(checked.fixed)
        if checked.builtin:
            call["builtin_scenes"] = list(checked.builtin)
        if checked.problems:
            call["unfixed"] = list(checked.problems)

    def _next(self, chain: tuple[str, ...], name: str, role: str) -> str:
        rest = chain[chain.index(name) + 1:]
        if rest:
            return f"trying {self.providers[rest[0]].label}"
        return "falling back to the built-in planner" if role == "draft" else f"going on without {role}"

    @staticmethod
    def _check(reply: Any, check: Callable[[Any, Any], Checked], previous: Any) -> Checked:
        if reply.data is None:
            return Checked(None, [reply.problem or "empty answer"], [], previous)
        try:
            return check(reply.data, previous)
        except ValidationError as error:
            return Checked(None, [describe_validation_error(error)], [], previous)
        except ValueError as error:
            return Checked(None, [str(error)], [], previous)

    def record(self, role: str, provider: Provider, attempt: str, outcome: str, seconds: float, *,
               error: str | None = None, input_tokens: int = 0, output_tokens: int = 0, reply: Any = None,
               estimated: bool = False) -> None:
        model = (reply.model if reply is not None and reply.model else "") or provider.model
        price = self.router.price_of(provider.name, model, provider.local)
        if price is None and model != provider.model:
            price = self.router.price_of(provider.name, provider.model, provider.local)
        cached = reply.cache_read_tokens if reply is not None else 0
        cost = (((input_tokens - cached) + cached * CACHE_READ_PRICE) * price[0] + output_tokens * price[1]) / 1e6 \
            if price else 0.0
        entry: dict[str, Any] = {
            "role": role, "provider": provider.name, "model": model, "attempt": attempt, "outcome": outcome,
            "seconds": round(seconds, 3), "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cost_usd": round(cost, 6), "priced": price is not None, "error": error}
        if model != provider.model:
            entry["requested_model"] = provider.model
        if reply is not None:
            entry.update(mode=reply.mode, tokens_per_s=reply.tokens_per_s)
            if cached:
                entry["cache_read_tokens"] = cached
            if reply.repairs:
                entry["parse_repairs"] = list(reply.repairs)
            if reply.notes:
                entry["notes"] = list(reply.notes)
        if estimated:
            entry["tokens_estimated"] = True
        if price is None and (input_tokens or output_tokens):
            self.log.warning(f"llm {role}: no price for {provider.label}; add it to LLMRouter.prices "
                             "or $SPARKLIO_LLM_PRICES (its cost is counted as $0)")
        self.calls.append(entry)

    # -------------------------------------------------------------- checks

    def _check_strategy(self, data: Any, previous: Any) -> Checked:
        strategy, fixed, problems = check_strategy(data, self.brief, self.brand)
        return Checked(strategy, problems, fixed)

    def _check_draft(self, data: Any, previous: Any) -> Checked:
        draft = merge(previous, check_draft(data, self.brief, self.brand)) if previous is not None else \
            check_draft(data, self.brief, self.brand)
        if draft.usable == 0:
            return Checked(None, draft.problems or ["no usable scene"], draft.fixed, draft)
        built = assemble(draft, self.brief, self.brand)
        return Checked(built.storyboard, draft.problems, built.fixed, draft, built.builtin_scenes)

    def _check_refine(self, data: Any, plan: Storyboard) -> Checked:
        refined, fixed, problems = check_refinement(data, plan, self.brief, self.brand)
        return Checked(refined, problems, fixed)


def _field(fixed: str) -> str:
    """'scenes.0.onscreen_text: 52 characters fitted ...' → 'scenes.0.onscreen_text'."""
    return fixed.split(":", 1)[0]


def _chain(names: tuple[str, ...]) -> str:
    return " → ".join(names) if names else "off"
