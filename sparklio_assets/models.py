"""Domain models: the brief that comes in, the storyboard that the planner writes, and the records
each stage leaves behind. Field names follow the spec (section 3.1, section 4) exactly, so the JSON a
frontend already knows round-trips unchanged.

Every boundary (CLI, API, LLM output, files on disk) goes through these models, and
`describe_validation_error` turns pydantic's errors into one line per problem that names the
field and the reason.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from .brand_assets import AssetError, check_font, check_image
from .language import language_of
from .typography import describe_chars, hangul_glyphs, undrawable

FPS = 24
FRAME = 1 / FPS
MAX_SCENES = 12
MIN_SCENE_SECONDS = 1.0

Channel = Literal[
    "instagram_reels",
    "instagram_stories",
    "instagram_feed",
    "youtube_shorts",
    "youtube",
    "tiktok",
    "facebook_reels",
    "facebook_feed",
]
MotionStyle = Literal[
    "slow zoom-in",
    "parallax movement",
    "rotation + glow effect",
    "slide transition",
    "pulse effect",
]
BrandElement = Literal[
    "logo_bottom_right",
    "logo",
    "product_3d",
    "certification_badge",
    "cta_button",
]
Quality = Literal["draft", "standard", "premium"]
EnginePreference = Literal["auto", "local", "cloud", "hybrid"]

HEX_COLOR = re.compile(r"^#[0-9A-Fa-f]{6}$")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")
SCENE_ID = re.compile(r"^scene_\d{3}$")
JOB_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{2,63}$"  # a plain folder name: also checked by the API's paths

# The five acts of the ad. The spec writes the first one "Hook / Attention".
PURPOSES = ("Hook / Attention", "Problem", "Solution", "Social Proof", "CTA")
ONSCREEN_TEXT_MAX = 40  # characters; two lines of large type inside the 9:16 safe area


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def _hex(value: str) -> str:
    if not HEX_COLOR.match(value):
        raise ValueError(f"must be a #RRGGBB hex colour, got {value!r}")
    return value.upper()


HexColor = Annotated[str, Field(description="#RRGGBB")]

# Characters that draw nothing: a name made only of these (after whitespace) is empty to a viewer.
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff"


def visible_text(value: str) -> str:
    """Text a person typed: no control characters (they corrupt logs, subtitles and file names) and,
    when not empty, at least one character that draws something."""
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"must not contain control characters (found U+{ord(bad):04X})")
    if value and all(c.isspace() or c in INVISIBLE for c in value):
        raise ValueError("must contain visible characters, not only zero-width or BOM characters")
    return value


def drawable_text(value: str) -> str:
    """Copy that goes on screen: every character has a glyph in the packaged fonts (zero-width
    characters draw nothing and are visible_text's to judge)."""
    missing = [c for c in undrawable(value) if c not in INVISIBLE]
    if missing:
        raise ValueError(f"goes on screen, and the ad's fonts cannot draw {describe_chars(missing)}: "
                         "emoji and such symbols would show as empty boxes; remove them")
    return value


class Brief(_Strict):
    """What the marketer asks for (spec 3.1 input, spec 4.1 request)."""

    brand_id: str = Field(min_length=1, max_length=64, examples=["2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10"])
    product: str = Field(min_length=1, max_length=120, examples=["Daily Eye Care Moisturizer"])
    target_audience: str = Field(min_length=1, max_length=200, examples=["20-30대 직장인"])
    goal: str = Field(min_length=1, max_length=200, examples=["제품 인지도 + 전환"])
    duration: int = Field(ge=5, le=60, description="seconds, 5-60", examples=[15])
    tone: str = Field(min_length=1, max_length=60, examples=["professional_warm"])
    channels: list[Channel] = Field(min_length=1, max_length=8, examples=[["instagram_reels", "youtube_shorts"]])

    _visible = field_validator("brand_id", "product", "target_audience", "goal", "tone")(
        lambda cls, v: visible_text(v))
    _drawable = field_validator("product")(lambda cls, v: drawable_text(v))

    @field_validator("tone")
    @classmethod
    def _tone_is_snake_case(cls, value: str) -> str:
        if not SNAKE.match(value):
            raise ValueError(f"must be snake_case words like 'professional_warm', got {value!r}")
        return value

    @field_validator("channels")
    @classmethod
    def _channels_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("must not repeat a channel")
        return value


def _brand_file(value: str | None, info: ValidationInfo) -> str | None:
    """A path in a brand JSON, relative to that file (the validation context's `base_dir`), made
    absolute so the kit reads the same wherever the job runs."""
    if value is None or value == "":
        return None
    path = Path(value).expanduser()
    if not path.is_absolute():
        base = (info.context or {}).get("base_dir") if info.context else None
        path = (Path(base) if base else Path.cwd()) / path
    return str(path.resolve())


def _checked(value: str | None, info: ValidationInfo, check) -> str | None:
    path = _brand_file(value, info)
    if path is not None:
        try:
            check(Path(path))
        except AssetError as error:
            raise ValueError(str(error)) from None
    return path


class ProductImage(_Strict):
    """One packshot. `kind`: packshot (cut out of its plain background when it has no alpha),
    screen (an app screenshot or full-bleed photo, shown whole in a device frame), or auto
    (alpha or a plain border → packshot, else screen)."""

    path: str
    kind: Literal["auto", "packshot", "screen"] = "auto"

    @field_validator("path")
    @classmethod
    def _image(cls, value: str, info: ValidationInfo) -> str:
        return _checked(value, info, check_image)  # type: ignore[return-value]


class BrandFonts(_Strict):
    """Optional brand fonts (TTF/OTF). Characters a font lacks are set in the packaged NanumGothic."""

    headline: str | None = None
    body: str | None = None

    @field_validator("headline", "body")
    @classmethod
    def _font(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked(value, info, check_font)


class BrandKit(_Strict):
    """A brand's look: applied to every frame of every scene. Paths (logo, product_images, fonts)
    are relative to the brand JSON file: read one with `BrandKit.from_file`."""

    brand_id: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=80)
    colors: list[HexColor] = Field(min_length=1, max_length=6, description="primary first, then accents")
    tone_keywords: list[str] = Field(default_factory=list, max_length=10)
    logo_text: str = Field(default="", max_length=40)
    cta_default: str = Field(default="", max_length=ONSCREEN_TEXT_MAX)
    logo: str | None = Field(default=None, description="PNG/WebP with alpha, or SVG")
    product_images: list[ProductImage] = Field(default_factory=list, max_length=8,
                                               description="packshots: alpha PNG/WebP, or JPEG/PNG on a plain "
                                                           "background")
    fonts: BrandFonts = Field(default_factory=BrandFonts)
    legal_text: str = Field(default="", max_length=300, description="verbatim small print on the end card")
    website: str = Field(default="", max_length=80, description="shown on the CTA card")

    _colors_hex = field_validator("colors", mode="after")(lambda cls, v: [_hex(c) for c in v])
    _drawable = field_validator("name", "logo_text", "cta_default", "legal_text", "website")(
        lambda cls, v: drawable_text(v))

    @field_validator("logo")
    @classmethod
    def _logo_file(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked(value, info, lambda p: check_image(p, allow_svg=True))

    @field_validator("product_images", mode="before")
    @classmethod
    def _plain_paths(cls, value):
        return [{"path": v} if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @classmethod
    def from_file(cls, path: Path | str) -> BrandKit:
        """Read a brand JSON, resolving its file paths against the file's folder."""
        path = Path(path)
        return cls.model_validate_json(path.read_text(encoding="utf-8"), context={"base_dir": str(path.parent)})

    @classmethod
    def default_for(cls, brief: Brief) -> BrandKit:
        """A neutral kit for briefs that come without one."""
        return cls(brand_id=brief.brand_id, name=brief.product, colors=["#F4F1EC", "#1F3A5F"],
                   logo_text=brief.product.upper()[:40])


class Scene(_Strict):
    id: str = Field(examples=["scene_001"])
    purpose: str = Field(min_length=1, max_length=40, examples=["Hook / Attention"])
    duration_seconds: float = Field(ge=MIN_SCENE_SECONDS, le=30, examples=[3])
    narration: str = Field(default="", max_length=200)
    onscreen_text: str = Field(default="", max_length=ONSCREEN_TEXT_MAX)
    image_prompt: str = Field(min_length=1, max_length=500)
    motion_style: MotionStyle
    brand_elements: list[BrandElement] = Field(default_factory=list)

    _drawable = field_validator("onscreen_text")(lambda cls, v: drawable_text(v))

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not SCENE_ID.match(value):
            raise ValueError(f"must look like 'scene_001', got {value!r}")
        return value

    @field_validator("duration_seconds")
    @classmethod
    def _whole_frames(cls, value: float) -> float:
        frames = round(value * FPS)
        if abs(frames / FPS - value) > 1e-6:
            raise ValueError(f"must be a whole number of frames at {FPS} fps (multiple of 1/{FPS} s), got {value}")
        return frames / FPS

    @property
    def frames(self) -> int:
        return round(self.duration_seconds * FPS)


class StoryboardMetadata(BaseModel):
    """Spec 3.1 `metadata`, plus provenance: which engine wrote the storyboard and what it cost."""

    model_config = ConfigDict(extra="forbid")

    bgm_mood: str = "calm_inspiring"
    transition_style: Literal["smooth_fade", "cut"] = "smooth_fade"
    brand_colors: list[HexColor] = Field(default_factory=list)
    estimated_cost: str = Field(default="$0.00", pattern=r"^\$\d+(\.\d+)?$")
    planner_engine: str = Field(default="builtin", description="which engine wrote the scenes")
    llm_calls: list[dict] = Field(default_factory=list, description="provider, model, seconds, tokens, cost per call")

    _colors_hex = field_validator("brand_colors", mode="after")(lambda cls, v: [_hex(c) for c in v])


class Storyboard(_Strict):
    title: str = Field(min_length=1, max_length=160)
    duration_seconds: float = Field(ge=5, le=60)
    format: Literal["9:16"] = "9:16"
    scenes: list[Scene] = Field(min_length=1, max_length=MAX_SCENES)
    metadata: StoryboardMetadata = Field(default_factory=StoryboardMetadata)

    @model_validator(mode="after")
    def _invariants(self) -> Storyboard:
        ids = [s.id for s in self.scenes]
        expected = [f"scene_{i:03d}" for i in range(1, len(self.scenes) + 1)]
        if ids != expected:
            raise ValueError(f"scenes: ids must be {expected[0]}..{expected[-1]} in order, got {ids}")
        total = sum(s.duration_seconds for s in self.scenes)
        if abs(total - self.duration_seconds) > FRAME / 2:
            raise ValueError(
                f"scenes: durations sum to {total:g} s but duration_seconds is {self.duration_seconds:g} s")
        return self

    def scene(self, scene_id: str) -> Scene:
        for scene in self.scenes:
            if scene.id == scene_id:
                return scene
        raise KeyError(f"storyboard has no {scene_id} (it has {len(self.scenes)} scenes)")

    def lacks(self, job_id: str, scene_ids: list[str]) -> str | None:
        """Why these scenes cannot be made ("job J has N scenes; scene_009 does not exist"), or None."""
        known = {s.id for s in self.scenes}
        if unknown := [s for s in scene_ids if s not in known]:
            return f"job {job_id} has {len(self.scenes)} scenes; {', '.join(unknown)} does not exist"
        return None


class JobSpec(_Strict):
    """One job = one brief made into one ad. Written once when the job is created."""

    job_id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12], pattern=JOB_ID_PATTERN)
    brief: Brief
    brand: BrandKit | None = None
    quality: Quality = "draft"
    engine_preference: EnginePreference = "auto"
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def brand_kit(self) -> BrandKit:
        return self.brand or BrandKit.default_for(self.brief)

    @model_validator(mode="after")
    def _brand_fonts_set_the_copy(self) -> JobSpec:
        """A Korean ad's brand font must have Hangul: otherwise every syllable would fall back to
        the packaged font and the brand font would set only the digits."""
        if self.brand is not None and language_of(self.brief) == "ko":
            for role in ("headline", "body"):
                path = getattr(self.brand.fonts, role)
                if path and hangul_glyphs(path) == 0:
                    raise ValueError(f"brand.fonts.{role}: no Hangul glyphs in {Path(path).name} "
                                     "(the brief is Korean); give a font with Hangul or leave it out")
        return self


class KeyImageRecord(BaseModel):
    scene_id: str
    path: str
    engine: str = Field(description="builtin | comfyui_sdxl | comfyui_lora | comfyui_controlnet ...")
    seconds: float
    width: int
    height: int
    note: str = ""
    seed: str = Field(default="", description="what decided the picture (the launchpad's seed gives another)")


class MotionRecord(BaseModel):
    """How a scene moves. Ken Burns is a pure function of the key image and these parameters, so it
    is rendered once, in the final encode; a generated clip (AnimateDiff) is a file to decode."""

    scene_id: str
    engine: Literal["kenburns", "animatediff"]
    motion_style: MotionStyle
    duration_seconds: float
    fps: int = FPS
    image_path: str
    clip_path: str | None = None
    preview_path: str | None = None
    seconds: float = 0.0
    fallback_reason: str | None = None


class AudioSummary(BaseModel):
    """The MP4's soundtrack, as the API and the asset metadata report it."""

    codec: str
    sample_rate: int
    channels: int
    loudness_lufs: float = Field(description="integrated, ITU-R BS.1770 (target -14)")
    true_peak_dbtp: float
    music: str = Field(description="engine, mood and tempo of the music bed")
    narration: str = Field(description="the TTS engine, or 'none (why)'")
    narration_lines: int = 0
    cost_usd: float = 0.0
    notes: list[str] = Field(default_factory=list)


class VideoRecord(BaseModel):
    job_id: str
    video_path: str
    thumbnail_path: str
    duration: float
    resolution: str
    fps: float
    bitrate: int
    size_bytes: int
    scenes_count: int
    engines: dict[str, str]
    seconds: float
    renditions: dict[str, str] = Field(default_factory=dict, description="format (4:5, 1:1, 16:9) → MP4 path")
    audio: AudioSummary | None = None


ECHO_MAX = 80  # characters of a bad value echoed back in an error message


def _echo(value: object) -> str:
    text = repr(value)
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX - 3] + "..."


def validation_problems(errors: list[dict], prefix: str = "", root: str = "(root)") -> list[tuple[str, str]]:
    """(field, reason) per pydantic error: the one formatter behind the CLI's, the campaigns' and
    the API's messages. `errors` is `ValidationError.errors()` (or FastAPI's, locations stripped)."""
    problems = []
    for item in errors:
        loc = ".".join(str(part) for part in item.get("loc", ()))
        message = item.get("msg", "invalid").removeprefix("Value error, ")
        kind = item.get("type")
        if kind == "json_invalid":
            loc, message = "", f"not valid JSON: {item.get('ctx', {}).get('error', message)}"
        elif kind not in ("missing", "extra_forbidden") and item.get("input") is not None \
                and not isinstance(item["input"], (dict, list)):
            message += f" (got {_echo(item['input'])})"
        if prefix:
            loc = f"{prefix}.{loc}" if loc else prefix
        problems.append((loc or root, message))
    return problems


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line per problem: `brief.duration: must be ≤ 60 (got 90)`."""
    return "; ".join(f"{field}: {reason}" for field, reason in validation_problems(error.errors(), prefix))
