"""A local stand-in for OpenAI's speech API (`POST /v1/audio/speech`) on 127.0.0.1, so the real
`openai` client runs unpatched in the narration tests.

It checks what the real API checks (a Bearer key; a known model; a known voice; `input` of 1 to
4096 characters; `instructions` refused for tts-1 models) and answers errors in OpenAI's JSON shape.
A good request gets a 24 kHz mono 16-bit WAV, streamed the way the real API streams it: the RIFF
and data sizes are 0xFFFFFFFF, because the length is not known when the header goes out. The
"speech" is a voiced buzz in syllables, about 0.19 s per Hangul syllable and 0.065 s per other
character, divided by `speed`, so a test can predict and measure its length.

`fail_next(status)` makes the next request fail with that status.
"""

from __future__ import annotations

import json
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

RATE = 24_000
VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
MODELS = {"gpt-4o-mini-tts", "tts-1", "tts-1-hd"}


def spoken_seconds(text: str, speed: float = 1.0) -> float:
    hangul = sum(1 for c in text if "\uac00" <= c <= "\ud7a3")
    return (0.19 * hangul + 0.065 * (len(text) - hangul)) / speed


def speech(text: str, speed: float = 1.0) -> np.ndarray:
    """int16 samples: a 150 Hz voiced buzz (harmonics falling off) gated into 5 syllables a second."""
    n = max(1, int(spoken_seconds(text, speed) * RATE))
    t = np.arange(n) / RATE
    voiced = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    syllables = np.clip(np.sin(np.pi * 5 * t) ** 2 * 1.4, 0, 1)
    edge = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)  # no clicks at either end
    return (voiced / 3 * syllables * edge * 0.6 * 32767).astype(np.int16)


def streamed_wav(samples: np.ndarray) -> bytes:
    header = (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, RATE,
                                                                                   RATE * 2, 2, 16)
              + b"data" + struct.pack("<I", 0xFFFFFFFF))
    return header + samples.tobytes()


class TTSStandIn:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.failures: list[int] = []
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                status, content_type, body = standin.answer(self.path, dict(self.headers), raw)
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def fail_next(self, status: int) -> None:
        self.failures.append(status)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, str, bytes]:
        if path != "/v1/audio/speech":
            return self._error(404, f"Invalid URL (POST {path})", "invalid_request_error")
        if not {k.lower(): v for k, v in headers.items()}.get("authorization", "").startswith("Bearer "):
            return self._error(401, "You didn't provide an API key.", "invalid_request_error")
        body = json.loads(raw)
        self.requests.append(body)
        if self.failures:
            status = self.failures.pop(0)
            return self._error(status, "The server had an error while processing your request." if status >= 500
                               else "Rate limit reached for requests", "server_error" if status >= 500 else "requests")
        model, voice, text = body.get("model"), body.get("voice"), body.get("input", "")
        if model not in MODELS:
            return self._error(404, f"The model `{model}` does not exist or you do not have access to it.",
                               "invalid_request_error", "model_not_found")
        if voice not in VOICES:
            return self._error(400, f"Invalid value: '{voice}'. Supported values are: {sorted(VOICES)}.",
                               "invalid_request_error", "invalid_value", "voice")
        if not 1 <= len(text) <= 4096:
            return self._error(400, "Invalid 'input': string too long or empty.", "invalid_request_error",
                               "string_above_max_length", "input")
        if body.get("instructions") and model.startswith("tts-1"):
            return self._error(400, "Instructions are not supported for this model.", "invalid_request_error",
                               None, "instructions")
        if body.get("response_format", "mp3") != "wav":
            return self._error(400, "this stand-in only makes wav", "invalid_request_error")
        return 200, "audio/wav", streamed_wav(speech(text, float(body.get("speed", 1.0))))

    @staticmethod
    def _error(status: int, message: str, kind: str, code: str | None = None,
               param: str | None = None) -> tuple[int, str, bytes]:
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        return status, "application/json", json.dumps(body).encode()
