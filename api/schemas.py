"""Request and response bodies, with the spec's field names (section 4) and OpenAPI examples."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from sparklio_assets.models import (
    HEX_COLOR,
    SNAKE,
    AudioSummary,
    BrandElement,
    BrandKit,
    Brief,
    EnginePreference,
    MotionStyle,
    Quality,
    Storyboard,
    drawable_text,
    visible_text,
)

Status = Literal["storyboard_ready", "queued", "processing", "completed", "failed", "canceled"]
TERMINAL = ("completed", "failed", "canceled")

BRIEF_EXAMPLE = {
    "brand_id": "2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10",
    "product": "Daily Eye Care Moisturizer",
    "target_audience": "20-30대 직장인",
    "goal": "제품 인지도 + 전환",
    "duration": 15,
    "tone": "professional_warm",
    "channels": ["instagram_reels", "youtube_shorts"],
}
BRAND_EXAMPLE = {
    "brand_id": "2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10",
    "name": "Daily Eye Care",
    "colors": ["#F2EDE8", "#7C4D3A"],
    "logo_text": "DAILY EYE CARE",
    "cta_default": "지금 무료 샘플 신청",
}


CONTROL = "\\x00-\\x1f\\x7f-\\x9f"
# After the surrounding whitespace: no control character, and at least one that draws something
# (models.visible_text). `maxLength` counts the raw string, whitespace included (_raw_lengths).
VISIBLE_TEXT = (f"^\\s*([^{CONTROL}]*[^\\s{CONTROL}\\u200b\\u200c\\u200d\\u2060\\ufeff][^{CONTROL}]*)?\\s*$")


def _stripped(node: dict[str, Any]) -> None:
    """These models strip surrounding whitespace before checking a string, so in the schema
    patterns allow the padding, and free text must hold a visible character once stripped (or be
    empty, where that is allowed)."""
    for option in node.get("anyOf", [node]):
        if option.get("type") == "string":
            if "pattern" in option:
                option["pattern"] = "^\\s*" + option["pattern"].removeprefix("^").removesuffix("$") + "\\s*$"
            elif "enum" not in option and "const" not in option:
                required = option.get("minLength", 0) >= 1
                option["pattern"] = VISIBLE_TEXT.replace(")?\\s*$", ")\\s*$") if required else VISIBLE_TEXT
        if option.get("type") == "array" and isinstance(option.get("items"), dict):
            _stripped(option["items"])


def _max_length(info: Any) -> int | None:
    return next((m.max_length for m in info.metadata if isinstance(m, annotated_types.MaxLen)), None)


def _raw_length(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A string's `maxLength` counts it as sent, surrounding whitespace included: what the schema
    says (pydantic would count it after stripping)."""
    limit = _max_length(cls.model_fields[info.field_name]) if info.field_name else None
    if isinstance(value, str) and limit is not None and len(value) > limit:
        raise ValueError(f"must be at most {limit} characters, surrounding whitespace included; it has {len(value)}")
    return value


def _visible(value: Any) -> Any:
    if isinstance(value, str):
        return visible_text(value)
    if isinstance(value, list):
        return [visible_text(v) if isinstance(v, str) else v for v in value]
    return value


# Copy that goes on screen must be drawable by the packaged fonts (models.drawable_text: no
# emoji). No pattern can say that briefly (the fonts' cmaps are 3,600 ranges), so the schema names
# it as a string format, which clients can read and the fuzzer generates (tests/test_api.py).
ONSCREEN_FORMAT = "onscreen-text"


def _onscreen(schema: dict[str, Any], *names: str) -> None:
    """Mark these fields (every string option of an optional one) with ONSCREEN_FORMAT."""
    props = schema.get("properties", {})
    for name in names:
        prop = props.get(name, {})
        for option in prop.get("anyOf", [prop]):
            if option.get("type") == "string":
                option["format"] = ONSCREEN_FORMAT
                option["description"] = "; ".join(filter(None, [
                    option.get("description"), "shown on screen: only characters the ad's fonts can draw (no emoji)"]))


def _strip_aware(schema: dict[str, Any]) -> None:
    for prop in schema.get("properties", {}).values():
        _stripped(prop)


def _precise_brief_schema(schema: dict[str, Any]) -> None:
    """Say in the schema what Brief's validators enforce, so clients (and the fuzzer) know."""
    props = schema.get("properties", {})
    if "tone" in props:
        props["tone"]["pattern"] = SNAKE.pattern
    if "channels" in props:
        props["channels"]["uniqueItems"] = True
    _strip_aware(schema)
    _onscreen(schema, "product")
    schema["examples"] = [BRIEF_EXAMPLE, {**BRIEF_EXAMPLE, "duration": 5, "brand": BRAND_EXAMPLE}]


# A brand kit's files (logo, packshots, fonts) are paths on the machine that reads the kit: the CLI
# takes them, the API does not (a client cannot know the server's files, and must not make it read them).
FILE_FIELDS = ("logo", "product_images", "fonts")


def _precise_brand_schema(schema: dict[str, Any]) -> None:
    for name in FILE_FIELDS:
        schema.get("properties", {}).pop(name, None)
    colors = schema.get("properties", {}).get("colors", {})
    colors.setdefault("items", {})["pattern"] = HEX_COLOR.pattern
    _strip_aware(schema)
    _onscreen(schema, "name", "logo_text", "cta_default", "legal_text", "website")
    schema["examples"] = [BRAND_EXAMPLE]


class BrandKitIn(BrandKit):
    """The brand kit as a request body (the same fields as BrandKit)."""

    model_config = ConfigDict(title="BrandKit", json_schema_extra=_precise_brand_schema)

    _raw = field_validator("*", mode="before")(classmethod(_raw_length))
    _shown = field_validator("brand_id", "name", "tone_keywords", "logo_text", "cta_default")(
        lambda cls, v: _visible(v))

    @model_validator(mode="before")
    @classmethod
    def _no_server_paths(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in FILE_FIELDS:
                if data.get(name) not in (None, [], {}):
                    raise ValueError(f"{name}: files are not taken in a JSON body (they would be paths on the "
                                     "server); upload them with the kit to POST /brands, then name its brand_id")
        return data


class StoryboardRequest(Brief):
    """Spec 4.1: the brief, flat, plus an optional brand kit (a neutral one is used without it)."""

    model_config = ConfigDict(json_schema_extra=_precise_brief_schema)

    brand: BrandKitIn | None = Field(default=None, description="the brand's colours, logo text and CTA")

    _raw = field_validator("*", mode="before")(classmethod(_raw_length))

    @field_validator("duration", mode="before")
    @classmethod
    def _a_number(cls, value: Any) -> Any:
        """A JSON number: "15" or true would be taken as 15 or 1 by pydantic's lax mode."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number of seconds (a JSON number), not {type(value).__name__}")
        return value

    def brief(self) -> Brief:
        return Brief.model_validate(self.model_dump(exclude={"brand"}))

    def brand_kit(self) -> BrandKit | None:
        return BrandKit.model_validate(self.brand.model_dump()) if self.brand else None


class StoryboardResponse(BaseModel):
    storyboard_id: str = Field(description="the job id; pass it to /video/generate")
    storyboard: Storyboard
    estimated_cost: float = Field(description="USD, storyboard + generation with the engines available")
    estimated_time: int = Field(description="seconds to make the video once /video/generate is called")
    status_url: str
    dagster_run_id: str = Field(description="the Dagster run that materialized the storyboard")


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"storyboard_id": "3f9a1c2b7d4e", "engine_preference": "hybrid", "quality": "standard"}]})

    storyboard_id: str = Field(min_length=1, max_length=64, examples=["3f9a1c2b7d4e"])
    engine_preference: EnginePreference = "auto"
    quality: Quality = "standard"


class GenerateResponse(BaseModel):
    job_id: str
    status: Status = "queued"
    estimated_completion: datetime
    status_url: str
    events_url: str = Field(description="server-sent events; signed when an API key is configured")
    warnings: list[str] = Field(default_factory=list)


class SceneEdit(BaseModel):
    """Optional changes to the scene before it is re-made; fields left out stay as they are."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, json_schema_extra=lambda schema: (
        _strip_aware(schema), _onscreen(schema, "onscreen_text"),
        schema.update(examples=[{"onscreen_text": "10초 흡수, 8시간 보습", "motion_style": "slow zoom-in"}])))

    onscreen_text: str | None = Field(default=None, max_length=40)
    narration: str | None = Field(default=None, max_length=200)
    image_prompt: str | None = Field(default=None, min_length=1, max_length=500)
    motion_style: MotionStyle | None = None
    brand_elements: list[BrandElement] | None = None

    _raw = field_validator("*", mode="before")(classmethod(_raw_length))
    _shown = field_validator("onscreen_text", "narration", "image_prompt")(lambda cls, v: _visible(v))
    _drawn = field_validator("onscreen_text")(lambda cls, v: v if v is None else drawable_text(v))


class JobError(BaseModel):
    stage: str = Field(description="storyboard | scene_001 ... | final_video | worker")
    step: str | None = Field(default=None, description="the Dagster step that failed")
    reason: str
    run_id: str | None = None


class RunInfo(BaseModel):
    run_id: str
    stage: str
    status: str


class StatusResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "3f9a1c2b7d4e", "status": "processing", "progress": 0.65,
        "current_step": "generating_motion_clips", "scenes_completed": 3, "scenes_total": 5, "eta_seconds": 45}]})

    job_id: str
    status: Status
    progress: float = Field(ge=0, le=1)
    current_step: str = Field(description="queued | planning_storyboard | generating_key_images | "
                                          "generating_motion_clips | waiting_for_gpu_worker | mixing_soundtrack | "
                                          "assembling_video | checking_quality | finishing (the worker is "
                                          "letting go of the job) | completed | failed | canceled")
    scenes_completed: int
    scenes_total: int
    eta_seconds: int | None = None
    kind: Literal["generate", "regenerate"] | None = None
    current_scene: str | None = None
    detail: str | None = Field(default=None, description="why the job waits (waiting_for_gpu_worker: the "
                                                          "worker is down or busy, and what the client saw)")
    error: JobError | None = None
    runs: list[RunInfo] = Field(default_factory=list, description="this request's Dagster runs, oldest first")
    updated_at: datetime


class ResultMetadata(BaseModel):
    duration: float
    resolution: str
    scenes_count: int
    total_cost: float
    generation_time: float | None = Field(description="seconds from the generate request to the finished video")
    engines: dict[str, str]
    fps: float
    bitrate: int
    size_bytes: int
    checks: dict[str, Any] | None = Field(default=None, description="quality checks, when the pipeline wrote them")
    renditions: dict[str, str] = Field(default_factory=dict, description="format (4:5, 1:1, 16:9) → download URL, "
                                                                         "for the feed channels the brief names")
    audio: AudioSummary | None = Field(default=None, description="the soundtrack: codec, loudness, which engines "
                                                                 "made the music and the narration")


class ResultResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "3f9a1c2b7d4e", "status": "completed",
        "video_url": "http://127.0.0.1:8000/video/files/3f9a1c2b7d4e/ad.mp4",
        "thumbnail_url": "http://127.0.0.1:8000/video/files/3f9a1c2b7d4e/thumbnail.jpg",
        "metadata": {"duration": 15.0, "resolution": "1080x1920", "scenes_count": 5, "total_cost": 0.0,
                     "generation_time": 38.2, "engines": {"assembly": "ffmpeg libx264 veryfast"}, "fps": 24,
                     "bitrate": 8000000, "size_bytes": 15000000}}]})

    job_id: str
    status: Literal["completed"] = "completed"
    video_url: str
    thumbnail_url: str
    metadata: ResultMetadata


class NotReady(BaseModel):
    detail: str
    job_id: str
    status: Status
    progress: float
    video_url: str | None = Field(default=None, description="an earlier video of the job, kept while it is re-made")


class Problem(BaseModel):
    detail: str


class FieldError(BaseModel):
    field: str
    location: str = Field(description="body | path | query | header")
    reason: str


class ValidationProblem(BaseModel):
    detail: str = Field(description="one line per problem: `field: reason`")
    errors: list[FieldError]


class EngineInfo(BaseModel):
    stage: str
    name: str
    available: bool
    detail: str = ""


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    version: str
    dagster_version: str
    instance: dict[str, Any]
    engines: list[EngineInfo]
    auth: Literal["api_key", "none"]
    workers_running: int | None = None
