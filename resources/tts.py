"""Narration: text to speech through OpenAI's speech API (`audio.speech.create`), with the `openai`
SDK. `gpt-4o-mini-tts` speaks Korean and English and takes style instructions (tone, pace).

Configured like the LLM router, from env or config: OPENAI_API_KEY, OPENAI_BASE_URL (any server that
speaks `/v1/audio/speech`), SPARKLIO_TTS_MODEL, SPARKLIO_TTS_VOICE; SPARKLIO_TTS=off turns it off.
With no key the ad gets music only, and the soundtrack says why. There is no offline engine: the
pip-installable ones either download their voices at run time or sound robotic, and a robotic voice
is worse for an ad than none.
"""

from __future__ import annotations

import os

import openai
from dagster import ConfigurableResource
from pydantic import Field

from sparklio_assets.soundtrack import SpeechError

DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "coral"


class TTSError(SpeechError):
    """The speech API refused or failed; the message says how."""


class TTSResource(ConfigurableResource):
    """The narration engine."""

    openai_api_key: str = Field(default="", description="Empty: $OPENAI_API_KEY.")
    openai_base_url: str = Field(default="", description="Empty: $OPENAI_BASE_URL, else api.openai.com.")
    model: str = Field(default="", description=f"Empty: $SPARKLIO_TTS_MODEL, else {DEFAULT_MODEL}.")
    voice: str = Field(default="", description=f"Empty: $SPARKLIO_TTS_VOICE, else {DEFAULT_VOICE}.")
    price_per_minute_usd: float = Field(default=0.015, description="of speech made (gpt-4o-mini-tts, 2025 list price)")
    timeout_s: float = Field(default=30.0, description="per HTTP attempt")
    max_retries: int = Field(default=1, description="SDK retries on 429/5xx/timeouts")
    enabled: bool = Field(default=True, description="False (or $SPARKLIO_TTS=off): no narration")

    @property
    def api_key(self) -> str:
        return self.openai_api_key or os.environ.get("OPENAI_API_KEY", "")

    @property
    def base_url(self) -> str:
        return self.openai_base_url or os.environ.get("OPENAI_BASE_URL", "")

    @property
    def model_name(self) -> str:
        return self.model or os.environ.get("SPARKLIO_TTS_MODEL") or DEFAULT_MODEL

    @property
    def voice_name(self) -> str:
        return self.voice or os.environ.get("SPARKLIO_TTS_VOICE") or DEFAULT_VOICE

    @property
    def engine(self) -> str:
        return f"openai:{self.model_name} ({self.voice_name})"

    def unavailable(self) -> str | None:
        """Why there is no narration engine, or None when there is one."""
        if not self.enabled:
            return "disabled in config"
        if os.environ.get("SPARKLIO_TTS", "").lower() in ("off", "0", "false"):
            return "SPARKLIO_TTS=off"
        if not self.api_key:
            return "no OPENAI_API_KEY"
        return None

    def speak(self, text: str, instructions: str = "") -> bytes:
        """The line as a WAV file's bytes. Raises TTSError naming the API's reason."""
        kwargs = {"base_url": self.base_url} if self.base_url else {}
        client = openai.OpenAI(api_key=self.api_key, max_retries=self.max_retries, timeout=self.timeout_s, **kwargs)
        # Style instructions are a gpt-4o-mini-tts feature; tts-1 rejects them.
        extra = {"instructions": instructions} if instructions and self.model_name.startswith("gpt-") else {}
        try:
            response = client.audio.speech.create(model=self.model_name, voice=self.voice_name, input=text,
                                                  response_format="wav", **extra)
        except openai.APIStatusError as error:
            raise TTSError(f"{self.engine}: HTTP {error.status_code}: {error.message}") from error
        except openai.APIError as error:
            raise TTSError(f"{self.engine}: {error}") from error
        finally:
            client.close()
        data = response.content
        if not data.startswith(b"RIFF"):
            raise TTSError(f"{self.engine}: answer is not a WAV file ({len(data)} bytes)")
        return data
