"""Test-wide environment: the suite makes its videos with the built-in engines, whatever the
developer's shell has configured (a local Ollama, API keys, a ComfyUI URL). Tests of the LLM
router, the narration (TTS) and the ComfyUI client point those at their own stand-in servers
explicitly."""

import os

import pytest

os.environ["SPARKLIO_LLM"] = "off"
os.environ["SPARKLIO_TTS"] = "off"
os.environ.pop("SPARKLIO_COMFYUI_URL", None)

# The API's settings from the environment, reset for the in-process app tests (api/settings.py).
API_ENV = ("SPARKLIO_API_KEY", "SPARKLIO_CORS_ORIGINS", "SPARKLIO_PUBLIC_URL", "SPARKLIO_MAX_BODY_BYTES",
           "SPARKLIO_MAX_UPLOAD_BYTES")


@pytest.fixture(scope="module")
def api_home(tmp_path_factory, request):
    """A media folder and Dagster instance of the test module's own, the API's settings at their defaults."""
    home = tmp_path_factory.mktemp(f"{request.module.__name__.rsplit('.', 1)[-1]}_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("SPARKLIO_HOME", str(home))
    patch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for name in API_ENV:
        patch.delenv(name, raising=False)
    yield home
    patch.undo()


@pytest.fixture(scope="module")
def client(home):
    """The app in process on the module's own `home` (test_api.py has its own, raising errors).
    Imported here: most test modules never start the app."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(), raise_server_exceptions=False) as c:
        yield c
