"""The built-in storyboard planner: no LLM, no network, always available.

It writes the classic five-act short ad (Hook, Problem, Solution, Social Proof, CTA) with a time
budget per act scaled to the requested duration, copy drawn from the brief in the brief's language
(Korean when the brief is written in Hangul), and image prompts / motion styles / brand elements
filled in. It never invents facts (no "clinically proven"): social proof stays generic until an LLM
or a human writes the real claim.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from .copy_safety import safe_brief
from .language import HANGUL, language_of
from .models import FPS, ONSCREEN_TEXT_MAX, PURPOSES, BrandKit, Brief, Scene, Storyboard, StoryboardMetadata

__all__ = ["english_audience", "plan_storyboard", "scene_plan", "split_frames"]


@dataclass(frozen=True)
class Act:
    purpose: str
    seconds: float  # its length in a 15 s ad; longer ads scale every scene alike
    motion: str
    brand_elements: tuple[str, ...]
    extra_elements: tuple[str, ...]  # for the 2nd, 3rd... scene of the same act


ACTS = (
    Act(PURPOSES[0], 3.0, "slow zoom-in", ("logo_bottom_right",), ("logo_bottom_right",)),
    Act(PURPOSES[1], 3.0, "parallax movement", (), ()),
    Act(PURPOSES[2], 4.0, "rotation + glow effect", ("product_3d", "logo"), ("product_3d",)),
    Act(PURPOSES[3], 3.0, "slide transition", ("certification_badge",), ()),
    Act(PURPOSES[4], 2.0, "pulse effect", ("logo", "cta_button"), ()),
)
EXTRA_SCENE_SECONDS = 3.5
# Which acts get the extra scenes of a longer ad, in order: the middle of the story grows first.
GROWTH = (2, 3, 1, 2, 0, 3, 1)

# The copy never quotes the audience field: it describes who the ad is for, in the marketer's words
# ("20-30대 직장인"), not something to say to them. Follow-ups cycle, so no two neighbouring scenes
# share a caption however long the ad.
COPY = {
    "ko": {
        PURPOSES[0]: ("오늘도 하루가 길었나요?", "바쁜 하루 끝, 나를 위한 시간은 있었나요?"),
        PURPOSES[1]: ("매일 반복되는 고민", "작은 불편이 쌓이면 하루가 무거워집니다."),
        PURPOSES[2]: ("{product}", "{product}, {brand}가 찾은 해답입니다."),
        PURPOSES[3]: ("믿을 수 있는 선택, {brand}", "많은 분들이 {brand}와 함께 달라진 하루를 경험하고 있어요."),
        PURPOSES[4]: ("{cta}", ""),
    },
    "en": {
        PURPOSES[0]: ("Running on empty?", "Long day? You deserve something that keeps up."),
        PURPOSES[1]: ("Same struggle, every day", "Small frictions pile up until the whole day feels heavy."),
        PURPOSES[2]: ("Meet {product}", "{product}: the answer {brand} built for you."),
        PURPOSES[3]: ("Trusted by people like you", "People are already making their day better with {brand}."),
        PURPOSES[4]: ("{cta}", ""),
    },
}
FOLLOW_UP = {
    "ko": {PURPOSES[1]: ("이런 순간, 익숙하지 않나요?", "미루다 보면 더 커지는 불편", "이제는 바꿀 때입니다"),
           PURPOSES[2]: ("이제 더 가볍게", "매일 쓰기 쉽게", "필요한 것만 담았습니다"),
           PURPOSES[3]: ("직접 느껴보세요", "꾸준함이 만드는 차이", "오늘부터 달라집니다"),
           PURPOSES[0]: ("잠깐, 주목!", "지금 이 순간에도")},
    "en": {PURPOSES[1]: ("Sound familiar?", "It only adds up", "Time for a change"),
           PURPOSES[2]: ("Ready when you are", "Made for every day", "Only what you need"),
           PURPOSES[3]: ("See the difference", "Small steps, real change", "Start today"),
           PURPOSES[0]: ("Wait for it", "Right now")},
}
CTA_DEFAULT = {"ko": "지금 바로 만나보세요", "en": "Try it today"}
VISUALS = {
    PURPOSES[0]: "close-up portrait of {audience_en}, soft lighting, cinematic, shallow depth of field",
    PURPOSES[1]: "everyday scene showing the problem {product_en} solves, moody light, {tone} mood",
    PURPOSES[2]: "premium product shot of {product_en}, clean studio light, brand colours {colors}",
    PURPOSES[3]: "happy customer using {product_en}, natural light, authentic lifestyle photo",
    PURPOSES[4]: "{product_en} package hero shot, bold composition, space for call to action",
}
MOODS = {"energetic": "upbeat_energetic", "playful": "upbeat_playful", "luxury": "elegant_minimal",
         "calm": "calm_inspiring", "warm": "calm_inspiring", "professional": "calm_inspiring"}


# Image models' text encoders (CLIP) read English: the built-in planner writes image prompts in
# English, glossing the Korean audience words marketers use most; anything else is described
# generically rather than passed through as Hangul the model cannot read.
AUDIENCE_EN = {"직장인": "office workers", "대학생": "university students", "학생": "students",
               "주부": "homemakers", "엄마": "mothers", "부모": "parents", "시니어": "seniors",
               "신혼부부": "newlyweds", "캠퍼": "campers", "운동": "active people"}
GENDER_EN = {"남성": ("male", "men"), "여성": ("female", "women")}
AGE = re.compile(r"(\d0)\s*(?:-|~|–)\s*(\d0)\s*대|(\d0)\s*대")


def english_audience(audience: str) -> str:
    """'20-30대 직장인' → 'office workers in their 20s to 30s'; English text is kept as is."""
    if not HANGUL.search(audience):
        return audience
    found = [ko for ko in AUDIENCE_EN if ko in audience]
    found = [ko for ko in found if not any(ko != other and ko in other for other in found)]  # 학생 in 대학생
    gender = next((forms for ko, forms in GENDER_EN.items() if ko in audience), None)
    if found:
        subject = " and ".join(AUDIENCE_EN[ko] for ko in found)
        subject = f"{gender[0]} {subject}" if gender else subject
    else:
        subject = gender[1] if gender else "people"
    age = AGE.search(audience)
    if age and age.group(1):
        return f"{subject} in their {age.group(1)}s to {age.group(2)}s"
    return f"{subject} in their {age.group(3)}s" if age else subject


def scene_plan(duration: int) -> list[int]:
    """Indices into ACTS, one per scene, in story order: 5 scenes for 15 s, about one per 4 s;
    under 10 s there is only time for Hook, Solution and CTA."""
    if duration < 10:
        return [0, 2, 4]
    count = max(5, min(12, round(duration / 4)))
    per_act = [1] * len(ACTS)
    for i in range(count - len(ACTS)):
        per_act[GROWTH[i % len(GROWTH)]] += 1
    return [act for act, n in enumerate(per_act) for _ in range(n)]


def split_frames(total_frames: int, weights: list[float]) -> list[int]:
    """Whole-frame durations proportional to weights that add up exactly to total_frames, with
    boundaries on half seconds where possible so the cuts land on a steady beat."""
    step = FPS // 2
    cum, acc, total_w = [0], 0.0, sum(weights)
    for w in weights[:-1]:
        acc += w
        cum.append(round(acc / total_w * total_frames / step) * step)
    cum.append(total_frames)
    return [b - a for a, b in itertools.pairwise(cum)]


def _fit(text: str, limit: int = ONSCREEN_TEXT_MAX) -> str:
    """Shorten at a word boundary (the renderer fits the rest to its box)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    words = text.split(" ")
    while len(words) > 1 and len(" ".join(words)) > limit - 1:
        words.pop()
    kept = " ".join(words).rstrip(",.:;·-")
    return (kept if len(kept) <= limit - 1 else kept[: limit - 1]) + "…"


def plan_storyboard(brief: Brief, brand: BrandKit) -> Storyboard:
    brief = safe_brief(brief, brand)  # brief text that reads as an instruction never reaches the copy
    lang = language_of(brief)
    acts = scene_plan(brief.duration)
    weights = [ACTS[a].seconds if acts.index(a) == i else EXTRA_SCENE_SECONDS for i, a in enumerate(acts)]
    frames = split_frames(brief.duration * FPS, weights)
    values = {
        "audience": brief.target_audience, "audience_en": english_audience(brief.target_audience),
        "product": brief.product, "product_en": brief.product if not HANGUL.search(brief.product) else "the product",
        "brand": brand.name, "goal": brief.goal, "tone": brief.tone.replace("_", " "),
        "colors": " and ".join(brand.colors), "cta": brand.cta_default or CTA_DEFAULT[lang],
    }
    scenes: list[Scene] = []
    seen: set[int] = set()
    repeats: dict[int, int] = {}
    for index, (act_index, n_frames) in enumerate(zip(acts, frames), start=1):
        act = ACTS[act_index]
        first = act_index not in seen
        seen.add(act_index)
        onscreen, narration = COPY[lang][act.purpose]
        if not first:
            options = FOLLOW_UP[lang][act.purpose]
            onscreen, narration = options[(repeats.get(act_index, 0)) % len(options)], ""
            repeats[act_index] = repeats.get(act_index, 0) + 1
        if act.purpose == PURPOSES[2] and first and len(onscreen.format(**values)) > ONSCREEN_TEXT_MAX:
            onscreen = "{product}"  # a long product name: no "Meet ..." prefix
        text = _fit(onscreen.format(**values))
        if scenes and text == scenes[-1].onscreen_text:  # never the same caption twice in a row
            text = _fit(FOLLOW_UP[lang][act.purpose][-1])
        scenes.append(Scene(
            id=f"scene_{index:03d}",
            purpose=act.purpose,
            duration_seconds=n_frames / FPS,
            narration=_fit(narration.format(**values), 200),
            onscreen_text=text,
            image_prompt=VISUALS[act.purpose].format(**values) + ", vertical 9:16, HD",
            motion_style=act.motion if first else ACTS[(act_index + 1) % len(ACTS)].motion,
            brand_elements=list(act.brand_elements if first else act.extra_elements),
        ))
    mood = next((m for key, m in MOODS.items() if key in brief.tone), "calm_inspiring")
    return Storyboard(
        title=f"{brief.product} - {brief.duration}s Ad",
        duration_seconds=brief.duration,
        scenes=scenes,
        metadata=StoryboardMetadata(bgm_mood=mood, brand_colors=brand.colors, estimated_cost="$0.00",
                                    planner_engine="builtin"),
    )
