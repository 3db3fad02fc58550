"""ComfyUI's wire vocabulary: the errors the client raises and the pydantic models of what the
server sends (`/system_stats`, `/prompt`, `/history`), as the reference (v0.3.64) documents them."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

URL_ENV = "SPARKLIO_COMFYUI_URL"
OWN_PROMPT_ID_SINCE = (0, 3, 44)
OUTPUT_KEYS = ("images", "gifs", "videos")  # SaveImage/SaveVideo, VHS (mp4 too), ArtVentureX

Log = Callable[[str], None]
Graph = dict[str, dict[str, Any]]


# --------------------------------------------------------------------------------------- errors


class ComfyError(RuntimeError):
    """Anything that went wrong talking to ComfyUI. `transient` says whether trying again can help."""

    transient = False


class ComfyUnavailable(ComfyError):
    """The server did not answer (connection refused/reset, timeout) or answered 5xx."""

    transient = True


class ComfyLostJob(ComfyError):
    """The job is in neither the queue nor the history: the server restarted or it was deleted."""

    transient = True


class ComfyValidationError(ComfyError):
    """The graph does not fit the server's node schemas (found client-side, or the server's 400)."""

    def __init__(self, message: str, issues: list[NodeIssue]):
        super().__init__(message)
        self.issues = issues


class ComfyExecutionError(ComfyError):
    """A node raised while the job ran (history status `error` ending in `execution_error`)."""

    def __init__(self, message: str, node_id: str = "", node_type: str = "", exception_type: str = ""):
        super().__init__(message)
        self.node_id, self.node_type, self.exception_type = node_id, node_type, exception_type


class ComfyInterrupted(ComfyError):
    """The job was interrupted (by us or by someone at the ComfyUI UI)."""


class ComfyTimeout(ComfyError):
    """The job ran longer than its deadline; it has been cancelled on the server. The worker was
    up and running it: this is not an unreachable worker."""


class ComfyBusy(ComfyError):
    """The worker is up but busy: the job waited behind other jobs longer than `queue_timeout_s`
    without starting; it has been taken out of the queue."""


class ComfyWorkerDown(ComfyUnavailable):
    """The worker stayed unreachable for the whole `worker_wait_s`: the root cause is kept."""

    transient = False


class ComfyCancelStuck(ComfyError):
    """A cancelled job was still on the worker after `cancel_confirm_s` of interrupts: nothing is
    queued behind it."""


# ------------------------------------------------------------------------------- boundary models


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class SystemInfo(_Open):
    comfyui_version: str = ""
    python_version: str = ""
    os: str = ""


class Device(_Open):
    name: str = ""
    type: str = ""
    vram_total: int = 0
    vram_free: int = 0


class SystemStats(_Open):
    """`GET /system_stats`: health check and version gate."""

    system: SystemInfo = Field(default_factory=SystemInfo)
    devices: list[Device] = Field(default_factory=list)

    @property
    def version(self) -> tuple[int, ...]:
        return parse_version(self.system.comfyui_version)


class NodeIssue(BaseModel):
    """One problem with one input of one node, in ComfyUI's own error vocabulary."""

    node_id: str
    class_type: str = ""
    input_name: str = ""
    type: str
    message: str

    def __str__(self) -> str:
        where = f"node {self.node_id}" + (f" ({self.class_type})" if self.class_type else "")
        if self.input_name:
            where += f" input '{self.input_name}'"
        return f"{where}: {self.message} [{self.type}]"


class PromptAccepted(_Open):
    """`POST /prompt` 200 body."""

    prompt_id: str
    number: float = 0
    node_errors: dict[str, Any] = Field(default_factory=dict)


class OutputFile(_Open):
    """One file in a history entry's outputs; `fullpath` (VHS) is a server path and is ignored."""

    filename: str
    subfolder: str = ""
    type: str = "output"
    format: str = ""


class HistoryStatus(_Open):
    status_str: str = ""
    completed: bool = False
    messages: list[list[Any]] = Field(default_factory=list)


class HistoryEntry(_Open):
    """`GET /history/{id}` → `{id: entry}` once the job has finished (or failed)."""

    outputs: dict[str, dict[str, Any]] = Field(default_factory=dict)
    status: HistoryStatus = Field(default_factory=HistoryStatus)

    def files(self) -> list[tuple[str, str, OutputFile]]:
        """(node id, output key, file) for every downloadable output."""
        found = []
        for node_id, output in self.outputs.items():
            for key in OUTPUT_KEYS:
                for item in output.get(key) or []:
                    if isinstance(item, dict) and item.get("filename"):
                        found.append((node_id, key, OutputFile.model_validate(item)))
        return found


class DownloadedFile(BaseModel):
    node_id: str
    kind: str  # images | gifs | videos
    path: Path
    remote: OutputFile


class JobResult(BaseModel):
    """What `ComfyUIClient.run` returns: the job's id, the downloaded files, how long it took."""

    prompt_id: str
    files: list[DownloadedFile]
    seconds: float
    attempts: int = 1

    def by_kind(self, kind: str) -> list[DownloadedFile]:
        return [f for f in self.files if f.kind == kind]


def content_name(path: Path) -> str:
    """Upload name from the file's bytes: a retry re-uses the copy already there, and two jobs
    never overwrite each other's inputs (uploads with the same name do, with overwrite)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]
    return f"{Path(path).stem}-{digest}{Path(path).suffix}"


def parse_version(text: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", text or "")[:3]
    return tuple(int(p) for p in parts)
