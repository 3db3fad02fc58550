"""`sparklio.yaml`: the one settings file the CLI (`--config`), the API's worker and `dagster dev`
read. Its `comfy:` section holds the fields of the `comfy` resource (URL, waits, every generation
setting); anything left out keeps the spec's default.

    comfy:
      url: http://gpu-worker:8188
      worker_wait_s: 900
      steps: 35
      cfg: 6.0
      motion_denoise: 0.6
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from dagster import DagsterInvalidConfigError
from pydantic import ValidationError

from .resource import ComfyUIResource

CONFIG_ENV = "SPARKLIO_CONFIG"
DEFAULT_NAME = "sparklio.yaml"


class ConfigFileError(ValueError):
    """The settings file is missing, not YAML, or has a bad field (named, with the reason)."""


def config_path(path: str | Path | None = None) -> Path | None:
    """The file asked for, else $SPARKLIO_CONFIG, else ./sparklio.yaml when there is one."""
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path.cwd() / DEFAULT_NAME
    return local if local.is_file() else None


def load_config(path: str | Path | None = None) -> dict[str, Any]:
    """The file's sections ({} without a file)."""
    found = config_path(path)
    if found is None:
        return {}
    try:
        data = yaml.safe_load(found.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigFileError(f"config: file {found} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"config: {found} is not valid YAML ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(f"config: {found} must be a mapping of sections (comfy: ...), not {type(data).__name__}")
    return data


def comfy_resource(path: str | Path | None = None, **overrides: Any) -> ComfyUIResource:
    """The `comfy` resource from the file's `comfy:` section (plus overrides)."""
    section = load_config(path).get("comfy") or {}
    if not isinstance(section, dict):
        raise ConfigFileError("config: comfy: must be a mapping of resource fields")
    unknown = sorted(set(section) - set(ComfyUIResource.model_fields))
    if unknown:
        raise ConfigFileError(f"config: comfy.{unknown[0]}: unknown field (known: url, steps, cfg, sampler, "
                              "scheduler, key_width, motion_steps, motion_denoise, worker_wait_s, ...)")
    try:
        return ComfyUIResource(**{**section, **{k: v for k, v in overrides.items() if v is not None}})
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ()))
        raise ConfigFileError(f"config: comfy.{field}: {first.get('msg', 'invalid')}") from None
    except DagsterInvalidConfigError as error:
        raise ConfigFileError(f"config: comfy: {error}") from None
