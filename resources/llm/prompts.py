"""Prompts live in `resources/prompts/*.md`; this module fills them in.

The brief (and anything an earlier model wrote) goes into the user message as JSON inside a
`<brief_json>` ... `</brief_json>` block. `<` and `>` inside it are written as JSON escapes, so the
data can never close its block or open a new one, and the system prompt says the block is data.
Whatever the brief says, the output format is fixed by the schema each provider enforces and by
pydantic validation afterwards.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from sparklio_assets.language import language_of
from sparklio_assets.models import MAX_SCENES, ONSCREEN_TEXT_MAX, BrandKit, Brief
from sparklio_assets.planner import scene_plan

SYSTEM = {"usp": "strategist.md", "draft": "scene_planner.md", "refine": "copywriter.md"}
TASK = {"usp": "usp_task.md", "draft": "draft_task.md", "refine": "refine_task.md"}


@cache
def prompt_file(name: str) -> str:
    return (files("resources") / "prompts" / name).read_text(encoding="utf-8").strip()


def fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{{" + key + "}}", value)
    return template.strip()


def data_block(tag: str, data: Any) -> str:
    text = json.dumps(data, ensure_ascii=False, indent=2)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e")
    return f"<{tag}>\n{text}\n</{tag}>"


def system_prompt(role: str) -> str:
    return fill(prompt_file(SYSTEM[role]), rules=prompt_file("rules.md"))


def brief_data(brief: Brief, brand: BrandKit) -> dict[str, Any]:
    return {
        "language": language_of(brief),
        "brief": brief.model_dump(mode="json", exclude={"brand_id"}),
        "brand_kit": brand.model_dump(mode="json", include={"name", "tone_keywords", "logo_text", "cta_default"}),
    }


def constraints(brief: Brief) -> str:
    suggested = len(scene_plan(brief.duration))
    return "\n".join([
        f"- The ad is exactly {brief.duration} seconds long: scene duration_seconds add up to {brief.duration}.",
        f"- {min(3, brief.duration)} to {min(MAX_SCENES, brief.duration)} scenes; about {suggested} suit "
        f"{brief.duration} seconds. Each scene lasts at least 1 second.",
        "- The first scene is the hook (purpose 'Hook / Attention'); the last scene has purpose 'CTA'.",
        f"- On-screen text: at most {ONSCREEN_TEXT_MAX} characters per scene, spaces included.",
        f"- Copy language: {language_of(brief)}.",
    ])


def user_prompt(role: str, brief: Brief, brand: BrandKit, *, strategy: dict | None = None,
                storyboard: dict | None = None) -> str:
    return fill(
        prompt_file(TASK[role]),
        constraints=constraints(brief),
        brief=data_block("brief_json", brief_data(brief, brand)),
        strategy=data_block("strategy_json", strategy) if strategy else "",
        storyboard=data_block("storyboard_json", storyboard) if storyboard else "",
    )


def repair_prompt(errors: str, fixed: list[str] | None = None) -> str:
    """Name only the fields code could not fix; say what code already fixed so it stays."""
    done = ("\n\nAlready fixed by Sparklio (keep as is): " + "; ".join(fixed)) if fixed else ""
    return fill(prompt_file("repair.md"), errors=errors, fixed=done)
