"""Test-wide environment: the suite makes its videos with the built-in engines, whatever the
developer's shell has configured (a local Ollama, API keys, a ComfyUI URL). Tests of the LLM
router, the narration (TTS) and the ComfyUI client point those at their own stand-in servers
explicitly."""

import os

os.environ["SPARKLIO_LLM"] = "off"
os.environ["SPARKLIO_TTS"] = "off"
os.environ.pop("SPARKLIO_COMFYUI_URL", None)
