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

Waits are honest (spec 8.1/8.2): a down worker (connection errors, HTTP 5xx) is waited for up
to `worker_wait_s` in all, the reason told through `on_wait`; a lost job (restart) is submitted
again up to `max_attempts` times; a job behind others on a busy worker is `ComfyBusy` after
`queue_timeout_s`, a running job past its deadline `ComfyTimeout`. A 400 validation error, an
execution error or an interrupt is final: repeating it would fail the same way. Every cancel is
followed until the prompt has left the worker's queue.
"""

from __future__ import annotations

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
import websockets.sync.client
from websockets.exceptions import ConnectionClosed

from .protocol import (
    OWN_PROMPT_ID_SINCE,
    URL_ENV,
    ComfyBusy,
    ComfyCancelStuck,
    ComfyError,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyLostJob,
    ComfyTimeout,
    ComfyUnavailable,
    ComfyValidationError,
    ComfyWorkerDown,
    DownloadedFile,
    Graph,
    HistoryEntry,
    JobResult,
    Log,
    OutputFile,
    PromptAccepted,
    SystemStats,
    content_name,
)
from .validation import format_issues, issues_from_400, validate_graph

WaitHook = Callable[[str], None]


class ComfyUIClient:
    """One ComfyUI server. Thread-compatible (one client per thread); close it, or use `with`."""

    def __init__(self, url: str, *, timeout_s: float = 300.0, queue_timeout_s: float = 900.0,
                 worker_wait_s: float = 600.0, cancel_confirm_s: float = 60.0,
                 on_wait: WaitHook | None = None, max_attempts: int = 3, backoff_s: float = 2.0,
                 connect_timeout_s: float = 5.0, read_timeout_s: float = 30.0, poll_interval_s: float = 2.0,
                 lost_after_polls: int = 2, ws_ping_s: float = 20.0, use_env_proxy: bool = False,
                 log: Log | None = None, models: Any = None):
        if not url:
            raise ValueError(f"no ComfyUI URL: set {URL_ENV} or the comfy resource's url")
        self.url = url.rstrip("/")
        self.timeout_s, self.max_attempts, self.backoff_s = timeout_s, max(1, max_attempts), backoff_s
        self.poll_interval_s, self.lost_after_polls, self.ws_ping_s = poll_interval_s, lost_after_polls, ws_ping_s
        self.connect_timeout_s = connect_timeout_s
        self.queue_timeout_s, self.worker_wait_s = queue_timeout_s, worker_wait_s
        self.cancel_confirm_s = cancel_confirm_s
        self.on_wait = on_wait  # told why the job waits for the worker ("" once it is back)
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
            raise ComfyError(f"ComfyUI refused the upload of {path} (HTTP {response.status_code}): "
                             f"{response.text[:200]}")
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
            try:
                self.log(f"ComfyUI job {accepted.prompt_id} accepted partially: "
                         f"cancel: {self.cancel_and_confirm(accepted.prompt_id)}")
            except ComfyCancelStuck as error:
                self.log(str(error))
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
        """Remove a pending job, or interrupt it if it is running, once. Returns what was done.
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

    def cancel_and_confirm(self, prompt_id: str, within_s: float | None = None) -> str:
        """Cancel and follow `/queue` until the prompt has left it, escalating: delete while
        pending, interrupt it by id, then (after a few polls) interrupt whatever runs, since an
        interrupt by id is ignored when the id does not match. Raises ComfyCancelStuck if it is
        still there after `within_s`; returns how it ended. A down worker has nothing to cancel."""
        within_s = self.cancel_confirm_s if within_s is None else within_s
        started = time.monotonic()
        actions: list[str] = []
        polls = 0
        while True:
            try:
                running, pending = self.queue_ids()
            except ComfyUnavailable:
                return "worker unreachable (restarting: its queue is gone)"
            if prompt_id not in running and prompt_id not in pending:
                waited = time.monotonic() - started
                done = ", ".join(dict.fromkeys(actions)) or "nothing to do"
                return f"{done}; left the queue after {waited:.1f} s"
            if time.monotonic() - started > within_s:
                raise ComfyCancelStuck(
                    f"ComfyUI job {prompt_id} is still {'running' if prompt_id in running else 'queued'} on "
                    f"{self.url} {within_s:g} s after it was cancelled ({', '.join(actions)}); restart the worker "
                    "or clear its queue")
            try:
                if prompt_id in pending:
                    self._request("POST", "/queue", json={"delete": [prompt_id]})
                    actions.append("deleted")
                elif polls < 3:
                    self._request("POST", "/interrupt", json={"prompt_id": prompt_id})
                    actions.append("interrupted")
                else:  # escalate: interrupt whatever runs (it is ours: we just saw it running)
                    self._request("POST", "/interrupt", json={})
                    actions.append("interrupted globally")
            except ComfyUnavailable:
                return "worker unreachable (restarting: its queue is gone)"
            polls += 1
            time.sleep(min(self.poll_interval_s, 0.2 * 2 ** min(polls, 4)))

    # -- waiting

    @contextmanager
    def _socket(self, client_id: str) -> Iterator[Any]:
        """The WebSocket for our client_id, or None if it cannot be opened (we poll instead)."""
        ws_url = re.sub(r"^http", "ws", self.url) + f"/ws?clientId={client_id}"
        with ExitStack() as stack:
            try:
                ws = stack.enter_context(websockets.sync.client.connect(ws_url, open_timeout=self.connect_timeout_s,
                                                 ping_interval=self.ws_ping_s, ping_timeout=self.ws_ping_s,
                                                 max_size=2 ** 24, proxy=True if self.use_env_proxy else None))
            except Exception as error:
                self.log(f"ComfyUI websocket not available ({type(error).__name__}: {error}); polling /history only")
                ws = None
            yield ws

    def wait(self, prompt_id: str, ws: Any, timeout_s: float,
             on_progress: Callable[[dict[str, Any]], None] | None = None) -> HistoryEntry:
        """Wait for a job to finish; the WebSocket says when to look, `/history` decides.

        Queued behind other jobs, it waits up to `queue_timeout_s` (ComfyBusy after); once it
        runs, up to `timeout_s` (ComfyTimeout after). Either way it is cancelled and confirmed gone."""
        missing = 0
        last_poll = float("-inf")
        finished = False  # a final event arrived: history is written a moment later, look often
        queued_since = time.monotonic()
        running_since: float | None = None
        ahead = 0
        while True:
            now = time.monotonic()
            if running_since is None and now - queued_since > self.queue_timeout_s:
                action = self.cancel_and_confirm(prompt_id)
                raise ComfyBusy(f"ComfyUI at {self.url} is up but busy: job {prompt_id} waited "
                                f"{now - queued_since:.0f} s behind {ahead} other job(s) without starting "
                                f"(queue_timeout_s {self.queue_timeout_s:g}); cancel: {action}")
            if running_since is not None and now - running_since > timeout_s:
                action = self.cancel_and_confirm(prompt_id)
                raise ComfyTimeout(f"ComfyUI job {prompt_id} ran {now - running_since:.0f} s, longer than its "
                                   f"deadline of {timeout_s:g} s (the worker is up); cancel: {action}")
            remaining = max(0.01, (running_since + timeout_s - now) if running_since is not None else 1.0)
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
            body = self._json("GET", "/queue")
            running, pending = _ids(body.get("queue_running")), _ids(body.get("queue_pending"))
            if prompt_id in running:
                missing = 0
                if running_since is None:
                    running_since = time.monotonic()
            elif prompt_id in pending:
                missing = 0
                ahead = len(running) + sum(1 for item in body.get("queue_pending") or []
                                           if isinstance(item, list) and len(item) > 1 and item[1] != prompt_id
                                           and _number(item) <= _number_of(body, prompt_id))
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
        """Call `action`; while the worker is unreachable, wait for it (up to `worker_wait_s` in all,
        `on_wait` told the reason); a lost job is tried again up to `max_attempts` times. Anything
        else is final. The last error names the root cause, not just a count."""
        waited_since: float | None = None
        lost = 0
        attempt = 0
        while True:
            attempt += 1
            try:
                result = action()
                if waited_since is not None:
                    self._tell_wait("")
                return result
            except ComfyError as error:
                if isinstance(error, ComfyLostJob):
                    lost += 1
                    if lost >= self.max_attempts:
                        raise ComfyLostJob(f"{error}; gave up after the worker lost it {lost} times") from error
                    self.log(f"ComfyUI {label}: {error}; submitting it again ({lost}/{self.max_attempts})")
                    continue
                if not isinstance(error, ComfyUnavailable) or isinstance(error, ComfyWorkerDown):
                    raise
                now = time.monotonic()
                waited_since = now if waited_since is None else waited_since
                waited = now - waited_since
                if waited >= self.worker_wait_s:
                    raise ComfyWorkerDown(f"GPU worker at {self.url} unreachable for {waited:.0f} s "
                                          f"(worker_wait_s {self.worker_wait_s:g}); last error: {error}") from error
                delay = min(15.0, self.backoff_s * 2 ** min(attempt - 1, 6), self.worker_wait_s - waited)
                reason = f"ComfyUI at {self.url} unreachable for {waited:.0f} s: {error}"
                self._tell_wait(reason)
                self.log(f"ComfyUI {label}: waiting for the GPU worker ({reason}); next look in {delay:.1f} s, "
                         f"giving up after {self.worker_wait_s:g} s")
                time.sleep(max(0.0, delay))

    def _tell_wait(self, reason: str) -> None:
        if self.on_wait is not None:
            try:
                self.on_wait(reason)
            except Exception as error:
                self.log(f"status hook failed: {error}")

    def run(self, graph: Graph, out_dir: Path, *, uploads: Mapping[str, Path] | None = None,
            timeout_s: float | None = None, label: str = "job",
            on_progress: Callable[[dict[str, Any]], None] | None = None) -> JobResult:
        """Health check, upload, validate, submit, wait, download; waits out a down worker.

        `uploads` maps a LoadImage node id to a local file: it is uploaded under a content-addressed
        name and the server's answer is written into that node (the caller's graph is not changed).
        After the worker drops out mid-job, the same prompt is looked up first (history, queue), so
        a retry never queues behind its own earlier prompt.
        """
        started = time.monotonic()
        attempts = 0
        state: dict[str, str | None] = {"prompt_id": None}

        def once() -> JobResult:
            nonlocal attempts
            attempts += 1
            return self._run_once(graph, out_dir, uploads or {}, timeout_s or self.timeout_s, on_progress, state)

        result = self.retrying(once, label)
        return result.model_copy(update={"seconds": round(time.monotonic() - started, 3), "attempts": attempts})

    def _run_once(self, graph: Graph, out_dir: Path, uploads: Mapping[str, Path], timeout_s: float,
                  on_progress: Callable[[dict[str, Any]], None] | None, state: dict[str, str | None]) -> JobResult:
        self.system_stats()
        client_id = uuid.uuid4().hex
        with self._socket(client_id) as ws:
            prompt_id = state["prompt_id"]
            if prompt_id is not None and not self._still_known(prompt_id):
                prompt_id = state["prompt_id"] = None  # the worker restarted: that prompt is gone
            if prompt_id is None:
                graph = json.loads(json.dumps(graph))  # our own copy: uploads are assigned into it
                for node_id, path in uploads.items():
                    if node_id not in graph:
                        raise ComfyError(f"upload target node {node_id} is not in the graph")
                    graph[node_id]["inputs"]["image"] = self.upload_image(path, name=content_name(path))
                self.validate(graph)
                prompt_id = state["prompt_id"] = self.submit(graph, client_id, prompt_id=str(uuid.uuid4()),
                                                             validate=False)
            else:
                self.log(f"ComfyUI job {prompt_id} is still on the worker; following it instead of resubmitting")
            try:
                entry = self.wait(prompt_id, ws, timeout_s, on_progress)
            except ComfyUnavailable:
                raise  # the server is gone: nothing to cancel; the same prompt is looked up when it is back
            except ComfyLostJob:
                state["prompt_id"] = None
                raise
            except BaseException as error:
                if not isinstance(error, (ComfyTimeout, ComfyBusy)):  # those cancelled already
                    state["prompt_id"] = None
                    self.log(f"ComfyUI job {prompt_id}: cancel: {self.cancel_and_confirm(prompt_id)}")
                raise
        self.outcome(prompt_id, entry)
        files = [DownloadedFile(node_id=node_id, kind=kind, path=self.download(item, out_dir), remote=item)
                 for node_id, kind, item in entry.files()]
        if not files:
            raise ComfyError(f"ComfyUI job {prompt_id} finished without output files")
        return JobResult(prompt_id=prompt_id, files=files, seconds=0.0)

    def _still_known(self, prompt_id: str) -> bool:
        """Whether the worker still has this prompt (queued, running, or finished in history)."""
        if self.history(prompt_id) is not None:
            return True
        running, pending = self.queue_ids()
        return prompt_id in running or prompt_id in pending


def _ids(items: list | None) -> set[str]:
    return {str(item[1]) for item in items or [] if isinstance(item, list) and len(item) > 1}


def _number(item: list) -> float:
    try:
        return float(item[0])
    except (TypeError, ValueError, IndexError):
        return 0.0


def _number_of(body: dict, prompt_id: str) -> float:
    for item in body.get("queue_pending") or []:
        if isinstance(item, list) and len(item) > 1 and item[1] == prompt_id:
            return _number(item)
    return float("inf")
