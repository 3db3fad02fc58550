"""The Smart LLM Router (spec 2.1, 3.1, 8.2): who writes the storyboard, and what it cost.

Three roles, each with a provider chain:

| role   | what                                      | preferred            |
| ------ | ----------------------------------------- | -------------------- |
| usp    | hard branding: USP, benefits, proof, CTA  | OpenAI (GPT-4o)      |
| draft  | the scene plan: acts, timing, copy, images | Ollama (Qwen2.5-7B)  |
| refine | copy polish: narration, on-screen text, tone | Anthropic (Claude Sonnet 5.5) |

`JobSpec.engine_preference` picks the chains:

- `local`: draft on Ollama only; nothing leaves the machine. Falls back to the built-in planner.
- `cloud`: usp on OpenAI, draft on OpenAI then Anthropic, refine on Anthropic.
- `hybrid`: the spec's full router: usp on OpenAI, draft on Ollama then OpenAI then Anthropic
  (spec 8.2: Qwen offline → cloud), refine on Anthropic.
- `auto` (default): scaled to `JobSpec.quality` to keep cost down: draft on Ollama then the cloud
  models for every quality; `standard` adds the Claude copy refinement, `premium` also the
  GPT-4o USP extraction.

`SPARKLIO_LLM=off` (or `enabled=False`) switches the router off: the built-in planner, no network.

The draft decides; if no provider in its chain produces a valid plan, the built-in planner writes
it. usp and refine only improve a plan: when they fail, the plan goes on without them. A provider
that is not configured is skipped, one that failed is not asked again within the same plan, every
step is logged and recorded in `metadata.llm_calls`, and `metadata.planner_engine` names what
actually wrote the storyboard, e.g. `ollama:qwen2.5:7b-instruct + anthropic:claude-sonnet-4-5
(refine)` or `builtin (fallback: ollama:qwen2.5:7b-instruct offline; openai: no OPENAI_API_KEY ...)`.

Every answer is schema-constrained by the provider, then validated with pydantic; an invalid
answer gets one repair round (the validation errors go back to the same model), then the next
provider is tried. Cost is each response's token usage times the price table.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from dagster import ConfigurableResource
from pydantic import Field, ValidationError

from sparklio_assets.models import JobSpec, Storyboard, describe_validation_error
from sparklio_assets.planner import plan_storyboard

from . import prompts
from .providers import AnthropicProvider, OllamaProvider, OpenAIProvider, Provider, ProviderError, Settings
from .schema import (
    BrandStrategy,
    CopyRefinement,
    DraftStoryboard,
    apply_copy,
    draft_schema,
    refine_schema,
    storyboard_for_refinement,
    storyboard_from_draft,
    strategy_schema,
)

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


@dataclass(frozen=True)
class Route:
    usp: tuple[str, ...]
    draft: tuple[str, ...]
    refine: tuple[str, ...]


def route_for(preference: str, quality: str) -> Route:
    if preference == "local":
        return Route((), ("ollama",), ())
    if preference == "cloud":
        return Route(("openai",), ("openai", "anthropic"), ("anthropic",))
    if preference == "hybrid":
        return Route(("openai",), ("ollama", "openai", "anthropic"), ("anthropic",))
    return Route(("openai",) if quality == "premium" else (), ("ollama", "openai", "anthropic"),
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
    return {
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
    """Routes the storyboard to Ollama / OpenAI / Anthropic with fallback to the built-in planner.

    Every string setting left empty is read from the environment when a plan starts (so keys are
    never part of the resource's visible config), e.g. `LLMRouter()` or
    `LLMRouter(openai_api_key=EnvVar("MY_KEY"))`.
    """

    ollama_host: str = Field(default="", description="Ollama server. Empty: $OLLAMA_HOST, else "
                                                     f"{DEFAULT_OLLAMA_HOST}. 'off' disables Ollama.")
    ollama_model: str = Field(default="", description="Empty: $SPARKLIO_OLLAMA_MODEL, else "
                                                      f"{DEFAULT_MODELS['ollama']}.")
    openai_api_key: str = Field(default="", description="Empty: $OPENAI_API_KEY.")
    openai_base_url: str = Field(default="", description="Empty: $OPENAI_BASE_URL, else api.openai.com. An "
                                                         "OpenAI-compatible server (Ollama's /v1) needs no key.")
    openai_model: str = Field(default="", description=f"Empty: $SPARKLIO_OPENAI_MODEL, else {DEFAULT_MODELS['openai']}.")
    anthropic_api_key: str = Field(default="", description="Empty: $ANTHROPIC_API_KEY.")
    anthropic_base_url: str = Field(default="", description="Empty: $ANTHROPIC_BASE_URL, else api.anthropic.com.")
    anthropic_model: str = Field(default="", description="Empty: $SPARKLIO_ANTHROPIC_MODEL, else "
                                                         f"{DEFAULT_MODELS['anthropic']}.")
    prices: dict[str, list[float]] = Field(
        default_factory=dict,
        description="USD per 1M [input, output] tokens by model name, over the built-in table and "
                    "$SPARKLIO_LLM_PRICES (JSON of the same shape).")
    timeout_s: float = Field(default=60.0, description="per HTTP attempt (a cold Ollama model load counts)")
    connect_timeout_s: float = Field(default=1.0, description="an unreachable host fails over after this")
    max_retries: int = Field(default=1, description="SDK retries on 429/5xx/timeouts, honouring retry-after")
    max_retry_wait_s: float = Field(default=20.0, description="a longer retry-after moves on to the next provider")
    max_output_tokens: int = Field(default=8192, description="cap per answer (thinking included)")
    temperature: Optional[float] = Field(default=None, description="empty: each model's default (GPT-5 and "
                                                                   "Claude 5 reject other values)")
    ollama_num_ctx: int = Field(default=8192, description="Ollama context window (its default is too small)")
    anthropic_output: str = Field(default="json_schema", description="json_schema (structured outputs) or tool "
                                                                     "(forced tool use, for pre-4.5 models)")
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
                        ollama_num_ctx=self.ollama_num_ctx, anthropic_output=self.anthropic_output,
                        anthropic_effort=self.anthropic_effort)

    def resolved(self) -> dict[str, str]:
        """The effective hosts and models (no keys)."""
        host = self.ollama_host or os.environ.get("OLLAMA_HOST", "") or DEFAULT_OLLAMA_HOST
        return {
            "ollama_host": "" if host.strip().lower() in ("off", "none", "disabled") else host.strip(),
            "ollama_model": self.ollama_model or os.environ.get("SPARKLIO_OLLAMA_MODEL") or DEFAULT_MODELS["ollama"],
            "openai_base_url": self.openai_base_url or os.environ.get("OPENAI_BASE_URL", ""),
            "openai_model": self.openai_model or os.environ.get("SPARKLIO_OPENAI_MODEL") or DEFAULT_MODELS["openai"],
            "anthropic_base_url": self.anthropic_base_url or os.environ.get("ANTHROPIC_BASE_URL", ""),
            "anthropic_model": (self.anthropic_model or os.environ.get("SPARKLIO_ANTHROPIC_MODEL")
                                or DEFAULT_MODELS["anthropic"]),
        }

    def providers(self) -> dict[str, Provider]:
        r, s = self.resolved(), self.settings()
        return {
            "ollama": OllamaProvider(r["ollama_host"], r["ollama_model"], s),
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

    def price_of(self, provider: str, model: str) -> tuple[float, float] | None:
        table = self.price_table()
        if model in table:
            return tuple(table[model][:2])  # type: ignore[return-value]
        matches = [name for name in table if model.startswith(name)]
        if matches:
            return tuple(table[max(matches, key=len)][:2])  # type: ignore[return-value]
        return (0.0, 0.0) if provider == "ollama" else None

    # -------------------------------------------------------------- planning

    def plan(self, job: JobSpec, log: Any = None) -> Storyboard:
        """The job's storyboard, by the models the route and the configuration allow, or by the
        built-in planner. Never raises for a provider's failure."""
        run = _PlanRun(self, job, _Log(log))
        try:
            return run.plan()
        finally:
            run.close()


class _PlanRun:
    """One plan(): the providers, what was called, what failed."""

    def __init__(self, router: LLMRouter, job: JobSpec, log: _Log):
        self.router, self.job, self.log = router, job, log
        self.brief, self.brand = job.brief, job.brand_kit
        self.providers = router.providers()
        self.calls: list[dict[str, Any]] = []
        self.down: dict[str, str] = {}  # provider name → why it is not asked again
        self.passed_over: list[str] = []  # the last role's providers that gave nothing, and why

    def close(self) -> None:
        for provider in self.providers.values():
            try:
                provider.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def plan(self) -> Storyboard:
        started = time.perf_counter()
        off = self.router.disabled()
        if off:
            self.log.info(f"llm router: off ({off}); the built-in planner writes the storyboard")
            return self.finish(plan_storyboard(self.brief, self.brand), f"builtin (LLM router off: {off})", started)
        route = route_for(self.job.engine_preference, self.job.quality)
        self.log.info(f"llm router: engine_preference={self.job.engine_preference}, quality={self.job.quality}; "
                      f"usp {_chain(route.usp)}, draft {_chain(route.draft)}, refine {_chain(route.refine)}")
        parts: list[str] = []

        strategy = None
        if route.usp:
            found = self.role("usp", route.usp, strategy_schema(), self._validate_strategy,
                              prompts.user_prompt("usp", self.brief, self.brand))
            if found:
                strategy, provider, _ = found
                parts.append(f"{provider.label} (usp)")

        user = prompts.user_prompt("draft", self.brief, self.brand,
                                   strategy=strategy.model_dump() if strategy else None)
        found = self.role("draft", route.draft, draft_schema(), self._validate_draft, user)
        if found is None:
            reasons = "; ".join(self.passed_over) or "no LLM in the route"
            self.log.warning(f"llm router: no model wrote a valid storyboard; the built-in planner writes it "
                             f"({reasons})")
            plan = plan_storyboard(self.brief, self.brand)
            engine = f"builtin (fallback: {reasons})"
            return self.finish(plan, engine, started)

        plan, draft_provider, fallback = found
        engine = draft_provider.label + (f" (fallback: {fallback})" if fallback else "")

        if route.refine:
            refine_chain = tuple(n for n in route.refine if self.providers[n].label != draft_provider.label)
            if not refine_chain:
                self.log.info(f"llm router: refine skipped, {draft_provider.label} wrote the draft itself")
            else:
                ids = [s.id for s in plan.scenes]
                user = prompts.user_prompt("refine", self.brief, self.brand, storyboard=storyboard_for_refinement(plan))
                refined = self.role("refine", refine_chain, refine_schema(ids),
                                    lambda data, plan=plan, ids=ids: self._validate_refine(data, plan, ids), user)
                if refined:
                    plan, provider, _ = refined
                    parts.append(f"{provider.label} (refine)")
        return self.finish(plan, " + ".join([engine, *parts]), started)

    def finish(self, plan: Storyboard, engine: str, started: float) -> Storyboard:
        total = summarize_calls(self.calls)
        metadata = plan.metadata.model_copy(update={
            "planner_engine": engine, "llm_calls": self.calls, "estimated_cost": format_usd(total["cost_usd"])})
        self.log.info(f"llm router: storyboard by {engine}: {len(plan.scenes)} scenes, {total['calls']} LLM calls, "
                      f"{total['input_tokens']} in / {total['output_tokens']} out tokens, "
                      f"{format_usd(total['cost_usd'])}, {time.perf_counter() - started:.2f} s")
        return plan.model_copy(update={"metadata": metadata})

    # -------------------------------------------------------------- one role

    def role(self, role: str, chain: tuple[str, ...], schema: dict[str, Any],
             validate: Callable[[Any], Any], user: str) -> tuple[Any, Provider, str] | None:
        """Ask each provider in the chain until one gives a valid answer: (value, provider, why the
        earlier ones were passed over) or None."""
        system = prompts.system_prompt(role)
        passed_over = self.passed_over = []
        for name in chain:
            provider = self.providers[name]
            why_not = provider.unavailable or self.down.get(name)
            if why_not:
                self.record(role, provider, "first", "skipped", 0.0, error=why_not)
                passed_over.append(f"{name}: {why_not}" if provider.unavailable else f"{provider.label} {why_not}")
                continue
            exchange = provider.exchange(system, user, TOOL_NAMES[role], schema)
            problem = ""
            for attempt in ("first", "repair"):
                started = time.perf_counter()
                try:
                    try:
                        reply = exchange.send()
                    except ProviderError:
                        raise
                    except Exception as unexpected:  # noqa: BLE001 - the storyboard must still be written
                        logger.exception(f"llm {role}: unexpected error from {provider.label}")
                        raise ProviderError("error", f"{type(unexpected).__name__}: {unexpected}") from unexpected
                except ProviderError as error:
                    self.record(role, provider, attempt, "error", time.perf_counter() - started, error=str(error),
                                input_tokens=error.input_tokens, output_tokens=error.output_tokens)
                    self.down[name] = f"{error.kind} earlier in this plan"
                    self.log.warning(f"llm {role}: {provider.label} failed ({error}); "
                                     f"{self._next(chain, name, role)}")
                    problem = error.kind
                    break
                seconds = time.perf_counter() - started
                value, problem = self._check(reply, validate)
                self.record(role, provider, attempt, "ok" if value is not None else "invalid", seconds,
                            error=problem or None, input_tokens=reply.input_tokens, output_tokens=reply.output_tokens)
                if value is not None:
                    self.log.info(f"llm {role}: {provider.label} answered in {seconds:.2f} s"
                                  f"{' after one repair round' if attempt == 'repair' else ''} "
                                  f"({reply.input_tokens} in / {reply.output_tokens} out tokens, "
                                  f"{format_usd(self.calls[-1]['cost_usd'])})")
                    return value, provider, "; ".join(passed_over)
                if attempt == "first":
                    self.log.warning(f"llm {role}: {provider.label} gave an invalid answer ({problem}); "
                                     "asking it once to repair it")
                    exchange.add_repair(reply, prompts.repair_prompt(problem))
                else:
                    self.log.warning(f"llm {role}: {provider.label} is still invalid after the repair round "
                                     f"({problem}); {self._next(chain, name, role)}")
                    problem = "invalid output"
            passed_over.append(f"{provider.label} {problem}")
        return None

    def _next(self, chain: tuple[str, ...], name: str, role: str) -> str:
        rest = chain[chain.index(name) + 1:]
        if rest:
            return f"trying {self.providers[rest[0]].label}"
        return "falling back to the built-in planner" if role == "draft" else f"going on without {role}"

    @staticmethod
    def _check(reply: Any, validate: Callable[[Any], Any]) -> tuple[Any, str]:
        if reply.data is None:
            return None, reply.problem or "empty answer"
        if not isinstance(reply.data, dict):
            return None, f"the answer must be a JSON object, got {type(reply.data).__name__}"
        try:
            return validate(reply.data), ""
        except ValidationError as error:
            return None, describe_validation_error(error)
        except ValueError as error:
            return None, str(error)

    def record(self, role: str, provider: Provider, attempt: str, outcome: str, seconds: float, *,
               error: str | None = None, input_tokens: int = 0, output_tokens: int = 0) -> None:
        price = self.router.price_of(provider.name, provider.model)
        cost = (input_tokens * price[0] + output_tokens * price[1]) / 1e6 if price else 0.0
        entry = {"role": role, "provider": provider.name, "model": provider.model, "attempt": attempt,
                 "outcome": outcome, "seconds": round(seconds, 3), "input_tokens": input_tokens,
                 "output_tokens": output_tokens, "cost_usd": round(cost, 6), "priced": price is not None,
                 "error": error}
        if price is None and (input_tokens or output_tokens):
            self.log.warning(f"llm {role}: no price for {provider.label}; add it to LLMRouter.prices "
                             "or $SPARKLIO_LLM_PRICES (its cost is counted as $0)")
        self.calls.append(entry)

    # -------------------------------------------------------------- validators

    def _validate_strategy(self, data: dict) -> BrandStrategy:
        return BrandStrategy.model_validate(data)

    def _validate_draft(self, data: dict) -> Storyboard:
        draft = DraftStoryboard.model_validate(data, context={"duration": self.brief.duration})
        return storyboard_from_draft(draft, self.brief, self.brand)

    def _validate_refine(self, data: dict, plan: Storyboard, ids: list[str]) -> Storyboard:
        return apply_copy(plan, CopyRefinement.model_validate(data, context={"scene_ids": ids}))


def _chain(names: tuple[str, ...]) -> str:
    return " → ".join(names) if names else "off"
