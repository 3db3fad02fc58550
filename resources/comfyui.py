"""The ComfyUI client: how the pipeline talks to the GPU worker's ComfyUI (HTTP + WebSocket).

It follows the algorithm in the ComfyUI reference (section 7), because ComfyUI's own examples and
most client libraries get the failure cases wrong:

1. `/system_stats` is the health check and the version gate (own prompt ids need v0.3.44+).
2. A graph is checked against the server's `/object_info` before it is sent: ComfyUI reports only
   the first unknown node, stops at a type mismatch, and does not check V3 combo values, so the
   client finds every problem up front and names node id, class and input for each.
3. Input images are uploaded and the *returned* name is used (a collision renames the file).
4. The WebSocket is opened before the POST, with our own client_id (events go only to it); the
   socket only says *when* to look, `/history/{id}` is the source of truth, and it is polled
   all along because long jobs drop sockets. A job in neither the queue nor history twice in a
   row was lost (server restart, deleted). A deadline bounds the wait; on expiry the job is cancelled.
5. Outputs (`images`, and `gifs`, which VHS uses even for mp4) are downloaded through `/view`.

Retries follow spec 8.1 (3 attempts, exponential backoff) and apply to transient faults only:
connection errors, HTTP 5xx and lost jobs. A 400 validation error, an execution error or an
interrupt is final: repeating it would fail the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mimetypes
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from dagster import ConfigurableResource
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
    """The job did not finish before the deadline; it has been cancelled on the server."""


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


# --------------------------------------------------------------------------- schema validation


def _is_link(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[1], int) \
        and not isinstance(value[1], bool) and isinstance(value[0], (str, int))


def _types_match(received: str, expected: str) -> bool:
    if received == "*" or expected == "*":
        return True
    return bool(set(received.split(",")) & set(expected.split(",")))


def _check_value(value: Any, spec: list | tuple, ctx: dict[str, str]) -> list[NodeIssue]:
    """Check one literal input value against its `/object_info` spec ([type, options])."""
    kind = spec[0] if spec else None
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}

    def issue(type_: str, message: str) -> list[NodeIssue]:
        return [NodeIssue(type=type_, message=message, **ctx)]

    if isinstance(kind, list) or kind == "COMBO":
        choices = kind if isinstance(kind, list) else opts.get("options", [])
        if opts.get("image_upload"):  # LoadImage: the server checks the file exists (uploads are new)
            return [] if isinstance(value, str) and value else issue("invalid_input_type", "expects a file name")
        if value not in choices:
            shown = ", ".join(repr(c) for c in choices[:12]) + (", …" if len(choices) > 12 else "")
            return issue("value_not_in_list", f"{value!r} is not one of the server's values: [{shown}]")
        return []
    if kind == "INT":
        if isinstance(value, bool) or not isinstance(value, int):
            return issue("invalid_input_type", f"expects an integer, got {value!r}")
    elif kind == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return issue("invalid_input_type", f"expects a number, got {value!r}")
    elif kind == "STRING":
        return [] if isinstance(value, str) else issue("invalid_input_type", f"expects a string, got {value!r}")
    elif kind == "BOOLEAN":
        return [] if isinstance(value, bool) else issue("invalid_input_type", f"expects true/false, got {value!r}")
    else:
        return issue("invalid_input_type", f"expects a link from a {kind} output, got the literal {value!r}")
    if "min" in opts and value < opts["min"]:
        return issue("value_smaller_than_min", f"value {value} smaller than min of {opts['min']}")
    if "max" in opts and value > opts["max"]:
        return issue("value_bigger_than_max", f"value {value} bigger than max of {opts['max']}")
    return []


def validate_graph(graph: Mapping[str, Any], object_info: Mapping[str, Any]) -> list[NodeIssue]:
    """Every problem with an API-format graph against a server's `/object_info`; [] when it fits.

    Mirrors ComfyUI's own checks (unknown class, required input missing, bad link, output type
    mismatch, wrong type, out of range, not in list) but reports them all at once, and also checks
    what the server does not: V3 `COMBO` values and VHS's per-format inputs.
    """
    issues: list[NodeIssue] = []
    if not isinstance(graph, Mapping) or not graph:
        return [NodeIssue(node_id="-", type="no_prompt", message="the graph is empty")]
    has_output = False
    for node_id, node in graph.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("inputs", {}), Mapping):
            issues.append(NodeIssue(node_id=str(node_id), type="invalid_prompt", message="is not {class_type, inputs}"))
            continue
        class_type = node.get("class_type")
        if not class_type:
            issues.append(NodeIssue(node_id=str(node_id), type="invalid_prompt", message="has no class_type"))
            continue
        schema = object_info.get(class_type)
        if not schema:
            issues.append(NodeIssue(node_id=str(node_id), class_type=class_type, type="invalid_prompt",
                                    message=f"node class {class_type!r} does not exist on this server "
                                            "(is its custom-node pack installed?)"))
            continue
        has_output = has_output or bool(schema.get("output_node"))
        inputs = node.get("inputs", {})
        declared = {**schema["input"].get("optional", {}), **schema["input"].get("required", {})}
        for name in schema["input"].get("required", {}):
            if name not in inputs:
                issues.append(NodeIssue(node_id=str(node_id), class_type=class_type, input_name=name,
                                        type="required_input_missing", message="required input is missing"))
        extras: dict[str, list] = {}
        for name, spec in declared.items():  # VHS: the chosen format declares more inputs
            formats = spec[1].get("formats") if len(spec) > 1 and isinstance(spec[1], dict) else None
            if formats and inputs.get(name) in formats:
                extras.update({e[0]: e[1:] for e in formats[inputs[name]]})
        for name, value in inputs.items():
            spec = declared.get(name) or extras.get(name)
            if spec is None:
                continue  # ComfyUI ignores undeclared inputs (RIFE's newer keys on older packs)
            ctx = {"node_id": str(node_id), "class_type": class_type, "input_name": name}
            if _is_link(value):
                source = graph.get(str(value[0]))
                if not isinstance(source, Mapping):
                    issues.append(NodeIssue(type="bad_linked_input", **ctx,
                                            message=f"links to node {value[0]!r}, which is not in the graph"))
                    continue
                source_schema = object_info.get(source.get("class_type", ""))
                if not source_schema:
                    continue  # reported on the source node itself
                outputs = source_schema.get("output", [])
                if not 0 <= value[1] < len(outputs):
                    issues.append(NodeIssue(type="bad_linked_input", **ctx,
                                            message=f"links to output {value[1]} of node {value[0]} "
                                                    f"({source['class_type']}), which has {len(outputs)} outputs"))
                    continue
                expected = spec[0] if spec else "*"
                if isinstance(expected, str) and expected != "COMBO" and not _types_match(outputs[value[1]], expected):
                    issues.append(NodeIssue(type="return_type_mismatch", **ctx,
                                            message=f"received {outputs[value[1]]} from node {value[0]} "
                                                    f"({source['class_type']}) but needs {expected}"))
                continue
            issues.extend(_check_value(value, spec, ctx))
    if not has_output and not any(i.type == "invalid_prompt" for i in issues):
        issues.append(NodeIssue(node_id="-", type="prompt_no_outputs", message="the graph has no output node"))
    issues.extend(_cycles(graph))
    return issues


def _cycles(graph: Mapping[str, Any]) -> list[NodeIssue]:
    state: dict[str, int] = {}
    found: list[NodeIssue] = []

    def visit(node_id: str) -> None:
        state[node_id] = 1
        node = graph.get(node_id)
        for value in (node.get("inputs", {}) if isinstance(node, Mapping) else {}).values():
            if _is_link(value) and str(value[0]) in graph:
                src = str(value[0])
                if state.get(src) == 1:
                    found.append(NodeIssue(node_id=node_id, type="dependency_cycle",
                                           message=f"is part of a cycle through node {src}"))
                elif src not in state:
                    visit(src)
        state[node_id] = 2

    for node_id in graph:
        if node_id not in state:
            visit(str(node_id))
    return found


def format_issues(issues: list[NodeIssue], source: str) -> str:
    head = f"graph rejected by {source} ({len(issues)} problem{'s' if len(issues) != 1 else ''})"
    return head + ": " + "; ".join(str(i) for i in issues)


def issues_from_400(body: Any) -> list[NodeIssue]:
    """Turn ComfyUI's 400 body (`error` + `node_errors`) into issues; `error.details` may be ""."""
    issues: list[NodeIssue] = []
    node_errors = body.get("node_errors") if isinstance(body, dict) else None
    if isinstance(node_errors, dict):
        for node_id, entry in node_errors.items():
            for err in entry.get("errors", []):
                extra = err.get("extra_info") or {}
                message = err.get("message", "")
                if err.get("details") and err.get("details") not in message:
                    message += f": {err['details']}"
                issues.append(NodeIssue(node_id=str(node_id), class_type=entry.get("class_type", ""),
                                        input_name=extra.get("input_name", ""), type=err.get("type", "error"),
                                        message=message))
    if not issues:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            details = error.get("details") or ""
            match = re.search(r"#([^']+)'", details)  # "Node ID '#2'"
            issues.append(NodeIssue(node_id=match.group(1) if match else "-", type=error.get("type", "error"),
                                    message=error.get("message", "") + (f" ({details})" if details else "")))
        else:  # servers before v0.3.27: {"error": "no prompt", "node_errors": []}
            issues.append(NodeIssue(node_id="-", type="error", message=str(error or body)))
    return issues


# -------------------------------------------------------------------------------------- client


class ComfyUIClient:
    """One ComfyUI server. Thread-compatible (one client per thread); close it, or use `with`."""

    def __init__(self, url: str, *, timeout_s: float = 300.0, max_attempts: int = 3, backoff_s: float = 2.0,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0, poll_interval_s: float = 2.0,
                 lost_after_polls: int = 2, ws_ping_s: float = 20.0, use_env_proxy: bool = False,
                 log: Log | None = None, models: Any = None):
        if not url:
            raise ValueError(f"no ComfyUI URL: set {URL_ENV} or the comfy resource's url")
        self.url = url.rstrip("/")
        self.timeout_s, self.max_attempts, self.backoff_s = timeout_s, max(1, max_attempts), backoff_s
        self.poll_interval_s, self.lost_after_polls, self.ws_ping_s = poll_interval_s, lost_after_polls, ws_ping_s
        self.connect_timeout_s = connect_timeout_s
        self.use_env_proxy = use_env_proxy
        self.models = models  # ComfyModels of the resource that made this client (builders read it)
        self.log: Log = log if log is not None else logging.getLogger("sparklio.comfyui").info
        self._http = httpx.Client(base_url=self.url, trust_env=use_env_proxy,
                                  timeout=httpx.Timeout(read_timeout_s, connect=connect_timeout_s))
        self._stats: SystemStats | None = None
        self._object_info: dict[str, Any] | None = None

    def __enter__(self) -> ComfyUIClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- HTTP plumbing

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:  # refused, reset, DNS, timeouts
            raise ComfyUnavailable(f"ComfyUI at {self.url} unreachable ({type(error).__name__}: {error})") from error
        if response.status_code >= 500:
            raise ComfyUnavailable(f"ComfyUI {method} {path} answered HTTP {response.status_code}: "
                                   f"{response.text[:200]}")
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code != 200:
            raise ComfyError(f"ComfyUI {method} {path} answered HTTP {response.status_code}: {response.text[:300]}")
        try:
            return response.json()
        except ValueError as error:
            raise ComfyUnavailable(f"ComfyUI {method} {path} sent a body that is not JSON") from error

    # -- health, version, schemas

    def system_stats(self) -> SystemStats:
        """Health check; caches the answer for the version gate."""
        self._stats = SystemStats.model_validate(self._json("GET", "/system_stats"))
        return self._stats

    @property
    def supports_own_prompt_id(self) -> bool:
        return self._stats is not None and self._stats.version >= OWN_PROMPT_ID_SINCE

    def object_info(self, refresh: bool = False) -> dict[str, Any]:
        if self._object_info is None or refresh:
            self._object_info = self._json("GET", "/object_info")
        return self._object_info

    def validate(self, graph: Graph) -> None:
        """Raise ComfyValidationError naming every bad node/input, before anything is queued."""
        issues = validate_graph(graph, self.object_info())
        if issues:
            raise ComfyValidationError(format_issues(issues, f"{self.url}/object_info (not sent)"), issues)

    # -- inputs

    def upload_image(self, path: Path, name: str | None = None, subfolder: str = "sparklio",
                     overwrite: bool = True) -> str:
        """Upload an input image; returns the value for LoadImage's `image` (the server's name,
        which differs from ours after a name collision without overwrite)."""
        data = Path(path).read_bytes()
        fields = {"subfolder": subfolder, "type": "input"}
        if overwrite:
            fields["overwrite"] = "true"
        response = self._request("POST", "/upload/image", data=fields,
                                 files={"image": (name or Path(path).name, data,
                                                  mimetypes.guess_type(str(path))[0] or "application/octet-stream")})
        if response.status_code != 200:
            raise ComfyError(f"ComfyUI refused the upload of {path} (HTTP {response.status_code}): {response.text[:200]}")
        body = response.json()
        stored = body.get("name") or ""
        if not stored:
            raise ComfyError(f"ComfyUI's upload answer has no name: {body}")
        folder = body.get("subfolder") or ""
        return f"{folder}/{stored}" if folder else stored

    # -- queue

    def submit(self, graph: Graph, client_id: str, prompt_id: str | None = None, validate: bool = True) -> str:
        """Queue a graph; returns the prompt id to follow. 400 (or 200 with node_errors) is final."""
        if validate:
            self.validate(graph)
        body: dict[str, Any] = {"prompt": graph, "client_id": client_id}
        if prompt_id and self.supports_own_prompt_id:
            body["prompt_id"] = prompt_id
        response = self._request("POST", "/prompt", json=body)
        if response.status_code == 400:
            try:
                payload = response.json()
            except ValueError:
                payload = {"error": response.text[:300]}
            issues = issues_from_400(payload)
            raise ComfyValidationError(format_issues(issues, f"{self.url}/prompt (HTTP 400)"), issues)
        if response.status_code != 200:
            raise ComfyError(f"ComfyUI POST /prompt answered HTTP {response.status_code}: {response.text[:300]}")
        accepted = PromptAccepted.model_validate(response.json())
        if accepted.node_errors:  # some outputs were dropped silently: not the job we asked for
            self.cancel(accepted.prompt_id)
            issues = issues_from_400({"node_errors": accepted.node_errors})
            raise ComfyValidationError(format_issues(issues, f"{self.url}/prompt (accepted partially, cancelled)"),
                                       issues)
        return accepted.prompt_id

    def queue_ids(self) -> tuple[set[str], set[str]]:
        """(running ids, pending ids) from `GET /queue`."""
        body = self._json("GET", "/queue")

        def ids(items: list) -> set[str]:
            return {str(item[1]) for item in items or [] if isinstance(item, list) and len(item) > 1}

        return ids(body.get("queue_running")), ids(body.get("queue_pending"))

    def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished job's entry, or None while queued/running (and for unknown ids: `{}`)."""
        body = self._json("GET", f"/history/{prompt_id}")
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return HistoryEntry.model_validate(entry) if entry else None

    def cancel(self, prompt_id: str) -> str:
        """Remove a pending job, or interrupt it if it is running. Returns what was done.
        Interrupts are cooperative: the server stops at its next progress point."""
        try:
            running, pending = self.queue_ids()
            if prompt_id in pending:
                self._request("POST", "/queue", json={"delete": [prompt_id]})
                return "deleted"
            if prompt_id in running:
                self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
                return "interrupted"
            return "not queued"
        except ComfyError as error:
            self.log(f"could not cancel ComfyUI job {prompt_id}: {error}")
            return "failed"

    # -- waiting

    @contextmanager
    def _socket(self, client_id: str) -> Iterator[Any]:
        """The WebSocket for our client_id, or None if it cannot be opened (we poll instead)."""
        from websockets.sync.client import connect

        ws_url = re.sub(r"^http", "ws", self.url) + f"/ws?clientId={client_id}"
        with ExitStack() as stack:
            try:
                ws = stack.enter_context(connect(ws_url, open_timeout=self.connect_timeout_s,
                                                 ping_interval=self.ws_ping_s, ping_timeout=self.ws_ping_s,
                                                 max_size=2 ** 24, proxy=True if self.use_env_proxy else None))
            except Exception as error:  # noqa: BLE001 - any failure here only costs us the hints
                self.log(f"ComfyUI websocket not available ({type(error).__name__}: {error}); polling /history only")
                ws = None
            yield ws

    def wait(self, prompt_id: str, ws: Any, deadline: float,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> HistoryEntry:
        """Wait for a job to finish; the WebSocket says when to look, `/history` decides."""
        from websockets.exceptions import ConnectionClosed

        missing = 0
        last_poll = float("-inf")
        finished = False  # a final event arrived: history is written a moment later, look often
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                action = self.cancel(prompt_id)
                raise ComfyTimeout(f"ComfyUI job {prompt_id} did not finish within the deadline; cancel: {action}")
            interval = 0.1 if finished else self.poll_interval_s
            until_poll = max(0.0, last_poll + interval - now)
            if ws is not None and not finished:
                try:
                    raw = ws.recv(timeout=max(0.01, min(until_poll, remaining)))
                    finished = self._is_final_event(raw, prompt_id, on_progress)
                except TimeoutError:
                    pass
                except ConnectionClosed as error:
                    self.log(f"ComfyUI websocket dropped ({error}); polling /history for job {prompt_id}")
                    ws = None
                if not finished and time.monotonic() - last_poll < self.poll_interval_s:
                    continue
            elif until_poll > 0:
                time.sleep(min(until_poll, remaining))
                continue
            last_poll = time.monotonic()
            entry = self.history(prompt_id)
            if entry is not None:  # ComfyUI writes history once, when the job is over
                return entry
            else:
                running, pending = self.queue_ids()
                if prompt_id in running or prompt_id in pending:
                    missing = 0
                else:
                    # done-but-not-yet-in-history lasts a moment; several looks in a row is a lost job
                    missing += 1
                    if missing >= self.lost_after_polls:
                        raise ComfyLostJob(f"ComfyUI job {prompt_id} is in neither the queue nor the history "
                                           "(server restarted or job deleted)")

    @staticmethod
    def _is_final_event(raw: Any, prompt_id: str, on_progress: Callable[[dict], None] | None) -> bool:
        if not isinstance(raw, str):
            return False  # binary previews (type 1/3/4): not needed here
        try:
            message = json.loads(raw)
        except ValueError:
            return False
        kind, data = message.get("type"), message.get("data") or {}
        if not isinstance(data, dict) or data.get("prompt_id") != prompt_id:
            return False  # `status` broadcasts, other jobs
        if kind in ("execution_success", "execution_error", "execution_interrupted"):
            return True
        if kind == "executing" and data.get("node") is None:
            return True  # sent after every prompt, whatever its outcome
        if kind == "progress" and on_progress is not None:
            on_progress(data)
        return False

    def outcome(self, prompt_id: str, entry: HistoryEntry) -> None:
        """Raise for a failed or interrupted job (they look alike; the last message tells)."""
        status = entry.status
        if status.status_str == "success" or (status.completed and status.status_str != "error"):
            return
        if not status.status_str and not status.messages and entry.outputs:
            return  # servers before history `status` existed: outputs mean it ran
        last: dict[str, Any] = {}
        kind = ""
        for message in entry.status.messages:
            if isinstance(message, list) and len(message) == 2 and message[0] in ("execution_error",
                                                                                  "execution_interrupted"):
                kind, last = message[0], message[1] or {}
        node = f"node {last.get('node_id', '?')} ({last.get('node_type', '?')})"
        if kind == "execution_interrupted":
            raise ComfyInterrupted(f"ComfyUI job {prompt_id} was interrupted at {node}")
        raise ComfyExecutionError(
            f"ComfyUI job {prompt_id} failed at {node}: {last.get('exception_type', 'error')}: "
            f"{str(last.get('exception_message', 'no message')).strip()}",
            node_id=str(last.get("node_id", "")), node_type=str(last.get("node_type", "")),
            exception_type=str(last.get("exception_type", "")))

    # -- outputs

    def download(self, item: OutputFile, out_dir: Path) -> Path:
        """Fetch one output through `/view` (built from filename/subfolder/type only)."""
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / Path(item.filename).name
        params = {"filename": item.filename, "subfolder": item.subfolder, "type": item.type}
        try:
            with self._http.stream("GET", "/view", params=params) as response:
                if response.status_code >= 500:
                    raise ComfyUnavailable(f"ComfyUI /view answered HTTP {response.status_code}")
                if response.status_code != 200:
                    raise ComfyError(f"ComfyUI /view {params} answered HTTP {response.status_code}")
                tmp = target.with_name(f".{target.name}.part")
                with tmp.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
                os.replace(tmp, target)
        except httpx.TransportError as error:
            raise ComfyUnavailable(f"ComfyUI at {self.url} unreachable during download ({error})") from error
        return target

    # -- the whole thing

    def retrying(self, action: Callable[[], Any], label: str = "request") -> Any:
        """Call `action`, retrying transient faults (spec 8.1: exponential backoff); others raise."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                return action()
            except ComfyError as error:
                if not error.transient:
                    raise
                if attempt == self.max_attempts:
                    raise type(error)(f"{error} (gave up after {attempt} attempts)") from error
                delay = self.backoff_s * 2 ** (attempt - 1)
                self.log(f"ComfyUI {label}: attempt {attempt}/{self.max_attempts} failed ({error}); "
                         f"retrying in {delay:g} s")
                time.sleep(delay)
        raise AssertionError("unreachable")

    def run(self, graph: Graph, out_dir: Path, *, uploads: Mapping[str, Path] | None = None,
            timeout_s: float | None = None, label: str = "job",
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> JobResult:
        """Health check, upload, validate, submit, wait, download, with retries on transient faults.

        `uploads` maps a LoadImage node id to a local file: it is uploaded under a content-addressed
        name and the server's answer is written into that node (the caller's graph is not changed).
        """
        started = time.monotonic()
        attempts = 0

        def once() -> JobResult:
            nonlocal attempts
            attempts += 1
            return self._run_once(graph, out_dir, uploads or {}, timeout_s or self.timeout_s, on_progress)

        result = self.retrying(once, label)
        return result.model_copy(update={"seconds": round(time.monotonic() - started, 3), "attempts": attempts})

    def _run_once(self, graph: Graph, out_dir: Path, uploads: Mapping[str, Path], timeout_s: float,
                  on_progress: Callable[[dict[str, Any]], None] | None) -> JobResult:
        self.system_stats()
        graph = json.loads(json.dumps(graph))  # our own copy: uploads are assigned into it
        for node_id, path in uploads.items():
            if node_id not in graph:
                raise ComfyError(f"upload target node {node_id} is not in the graph")
            graph[node_id]["inputs"]["image"] = self.upload_image(path, name=content_name(path))
        self.validate(graph)
        client_id = uuid.uuid4().hex
        with self._socket(client_id) as ws:
            prompt_id = self.submit(graph, client_id, prompt_id=str(uuid.uuid4()), validate=False)
            try:
                entry = self.wait(prompt_id, ws, time.monotonic() + timeout_s, on_progress)
            except ComfyUnavailable:
                raise  # the server is gone: nothing to cancel
            except BaseException as error:
                if not isinstance(error, (ComfyTimeout, ComfyLostJob)):
                    self.cancel(prompt_id)  # e.g. Dagster terminating the step: free the GPU
                raise
        self.outcome(prompt_id, entry)
        files = [DownloadedFile(node_id=node_id, kind=kind, path=self.download(item, out_dir), remote=item)
                 for node_id, kind, item in entry.files()]
        if not files:
            raise ComfyError(f"ComfyUI job {prompt_id} finished without output files")
        return JobResult(prompt_id=prompt_id, files=files, seconds=0.0)


# ------------------------------------------------------------------------------------ resource

MOTION_MODULES: dict[str, str] = {  # spec 3.3, with the real file names
    "slow zoom-in": "mm_sdxl_v10_beta.ckpt",
    "parallax movement": "mm_sd_v15_v2.ckpt",
    "rotation + glow effect": "mm_sdxl_v10_beta.ckpt",
    "slide transition": "mm_sd_v15_v2.ckpt",
    "pulse effect": "mm_sdxl_v10_beta.ckpt",
}


class ComfyModels(BaseModel):
    """Model file names and sampling settings the graph builders use (names as on the server)."""

    checkpoint: str = "sd_xl_base_1.0.safetensors"
    brand_lora: str = "brand_style_sdxl.safetensors"
    brand_loras: dict[str, str] = Field(default_factory=dict, description="brand_id → LoRA; falls back to brand_lora")
    lora_strength: float = 0.8
    controlnet: str = "controlnet-canny-sdxl-1.0.safetensors"
    controlnet_strength: float = 0.55
    ipadapter_preset: str = "PLUS (high strength)"
    motion_modules: dict[str, str] = Field(default_factory=lambda: dict(MOTION_MODULES))
    motion_checkpoint_sd15: str = "sd15_base.safetensors"
    motion_checkpoint_sdxl: str = "sd_xl_base_1.0.safetensors"
    rife: str = "rife49.pth"
    sampler: str = "dpmpp_2m_sde_gpu"
    scheduler: str = "karras"
    steps: int = 30
    cfg: float = 6.5
    motion_steps: int = 20
    motion_denoise: float = 0.65

    def lora_for(self, brand_id: str) -> str:
        return self.brand_loras.get(brand_id, self.brand_lora)


class ComfyUIResource(ConfigurableResource):
    """The GPU worker's ComfyUI. `url` empty (and SPARKLIO_COMFYUI_URL unset) = not configured:
    every quality then uses the built-in engines, so the product works offline."""

    url: str = Field(default="", description=f"e.g. http://gpu-worker:8188; empty → ${URL_ENV}; both empty = off")
    timeout_s: float = Field(default=300.0, description="deadline per key-image job (spec 8.1)")
    motion_timeout_s: float = Field(default=300.0, description="deadline per AnimateDiff job")
    max_attempts: int = Field(default=3, description="tries per job on transient faults (spec 8.1)")
    backoff_s: float = Field(default=2.0, description="first retry delay; doubles each time")
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    poll_interval_s: float = 2.0
    use_env_proxy: bool = Field(default=False, description="honour HTTP(S)_PROXY for the worker (LAN: no)")
    checkpoint: str = ComfyModels().checkpoint
    brand_lora: str = Field(default=ComfyModels().brand_lora, description="empty = no LoRA")
    brand_loras: dict[str, str] = Field(default_factory=dict, description="brand_id → LoRA file")
    lora_strength: float = 0.8
    controlnet: str = ComfyModels().controlnet
    ipadapter_preset: str = ComfyModels().ipadapter_preset
    motion_modules: dict[str, str] = Field(default_factory=lambda: dict(MOTION_MODULES),
                                           description="motion style → AnimateDiff motion module")
    motion_checkpoint_sd15: str = ComfyModels().motion_checkpoint_sd15
    motion_checkpoint_sdxl: str = ComfyModels().motion_checkpoint_sdxl
    rife: str = ComfyModels().rife

    @property
    def base_url(self) -> str:
        """Resolved at run time, so the env var can be set after the code location loads."""
        return (self.url or os.environ.get(URL_ENV, "")).strip()

    @property
    def configured(self) -> bool:
        return bool(self.base_url)

    def models(self) -> ComfyModels:
        fields = set(ComfyModels.model_fields) & set(type(self).model_fields)
        return ComfyModels(**{name: getattr(self, name) for name in fields})

    def client(self, log: Log | None = None) -> ComfyUIClient:
        return ComfyUIClient(self.base_url, timeout_s=self.timeout_s, max_attempts=self.max_attempts,
                             backoff_s=self.backoff_s, connect_timeout_s=self.connect_timeout_s,
                             read_timeout_s=self.read_timeout_s, poll_interval_s=self.poll_interval_s,
                             use_env_proxy=self.use_env_proxy, log=log, models=self.models())

