"""The LLM router resource and its providers (Ollama, OpenAI, Anthropic, built-in planner)."""

from .providers import ProviderError, Settings
from .router import DEFAULT_PRICES, LLMRouter, Route, format_usd, route_for, storyboard_cost_usd, summarize_calls

__all__ = ["DEFAULT_PRICES", "LLMRouter", "ProviderError", "Route", "Settings", "format_usd", "route_for",
           "storyboard_cost_usd", "summarize_calls"]
