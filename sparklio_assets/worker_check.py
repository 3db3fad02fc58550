"""`sparklio worker check [URL]`: is the GPU worker ready for the configured graphs?

Prints the preflight table (ComfyUI version, device and VRAM, every node class and model file
the configured graphs need, present or missing, and where a missing file goes) and exits 0 when
the worker is ready, 1 when anything required is missing or the worker does not answer, 2 for a
bad config file or no URL. It does not wait for a down worker: it says so at once.
"""

from __future__ import annotations

import sys

from resources.comfyui import URL_ENV, ComfyError
from resources.comfyui.config import ConfigFileError, comfy_resource

from .comfy_engines import preflight

EXIT_NOT_READY = 1
EXIT_BAD_INPUT = 2


def check_worker(url: str | None = None, config: str | None = None, out=print) -> int:
    try:
        resource = comfy_resource(config, url=url, worker_wait_s=0.0, max_attempts=1)
    except ConfigFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not resource.configured:
        print(f"error: no GPU worker URL: pass one, set {URL_ENV}, or comfy.url in sparklio.yaml", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        report = preflight(resource)
    except ComfyError as error:
        out(f"✗ GPU worker {resource.base_url}: {type(error).__name__}: {error}")
        return EXIT_NOT_READY
    out(report.table())
    return 0 if report.ready else EXIT_NOT_READY
