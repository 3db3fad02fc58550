"""Which engines this server's workers would use: configuration only (not probed), read the same
way the Dagster resources read it at run time. Shown by /health; generate warns from it."""

from __future__ import annotations

from pathlib import Path

from resources.comfyui import ComfyUIResource
from resources.ffmpeg import FFmpegRunner
from resources.llm.router import LLMRouter
from resources.tts import TTSResource

from .schemas import EngineInfo

CLOUD_ENGINES = ("openai", "anthropic", "comfyui")
NO_CLOUD = "no cloud engine is configured on this server; the built-in engines make the video"
HIDDEN = "configured (details need the API key)"


def engines(show_urls: bool = True) -> list[EngineInfo]:
    """The engines per stage; without `show_urls` (a caller without the key) no internal URL or
    file path is shown, only whether each is configured."""
    try:
        ffmpeg = FFmpegRunner().exe()
        ffmpeg_ok = Path(ffmpeg).is_file()
    except Exception:  # report, don't fail: the health check shows it
        ffmpeg, ffmpeg_ok = "", False

    router = LLMRouter()
    off = router.disabled()
    found = [EngineInfo(stage="storyboard", name="builtin", available=True,
                        detail="five-act planner; the last fallback of the LLM router")]
    for provider in router.providers().values():
        why = off or provider.unavailable
        found.append(EngineInfo(stage="storyboard", name=provider.label,
                                available=not why, detail=why or "configured (not probed)"))
    comfy = ComfyUIResource().base_url
    if comfy:
        comfy_detail = comfy if show_urls else HIDDEN
    else:
        comfy_detail = "SPARKLIO_COMFYUI_URL not set: standard/premium jobs use the built-in engines"
    tts = TTSResource()
    no_tts = tts.unavailable()
    return found + [
        EngineInfo(stage="image", name="builtin", available=True, detail="brand-colour key images (draft quality)"),
        EngineInfo(stage="image", name="comfyui", available=bool(comfy), detail=comfy_detail),
        EngineInfo(stage="motion", name="kenburns", available=True, detail="Ken Burns per motion style; the fallback"),
        EngineInfo(stage="motion", name="animatediff", available=bool(comfy), detail=comfy_detail),
        EngineInfo(stage="music", name="builtin synth", available=True, detail="music bed per bgm_mood"),
        EngineInfo(stage="narration", name=tts.engine, available=not no_tts,
                   detail=f"{no_tts}: ads get music only" if no_tts else "configured (not probed)"),
        EngineInfo(stage="assembly", name="ffmpeg", available=ffmpeg_ok, detail=Path(ffmpeg).name),
    ]


def cloud_available() -> bool:
    return any(e.available and e.name.split(":")[0] in CLOUD_ENGINES for e in engines())
