"""A local stand-in for ComfyUI (v0.3.64 as the reference documents it), for the client's tests.

It speaks the same protocol: `/system_stats`, `/object_info[/{class}]` (`{}` for an unknown
class), `POST /prompt` with ComfyUI's own validation semantics and 400 bodies (`invalid_prompt`
for the first unknown node, `prompt_outputs_failed_validation` with `node_errors`, a 200 with
node_errors when only some outputs are valid, no check of V3 `COMBO` values), `/queue`,
`/interrupt` (cooperative), `/history[/{id}]` (`{}` while queued/running and for unknown ids),
`/upload/image` (collision → `name (1).png`), `/view`, and the WebSocket `/ws?clientId=` with
`status`, `execution_start`, `execution_cached`, `executing`, `progress`, `executed`,
`execution_success`/`_error`/`_interrupted` and the closing `executing {node: null}`.

Instead of diffusion it runs a tiny interpreter of the graph that makes *real* media: SaveImage
writes PNGs (a seed-dependent picture at the latent's size; ControlNet guides and IPAdapter
references visibly shape it), AnimateDiff img2img makes frames that move with the motion style,
RIFE VFI really interpolates ((N−1)·m+1 frames) and VHS_VideoCombine writes an H.264 MP4 (or GIF)
reported under `gifs`, as VHS does.

Faults for tests are switched on through `standin.faults`: HTTP 500s, an execution error at a
node class, dropped WebSockets, lost jobs (as after a server restart), slow nodes (for
interrupts and deadlines), slow interrupts and interrupts by id that are ignored (as ComfyUI
does when the id does not match). `occupy(seconds)` makes the worker busy with someone else's
job; `restart(down_s)` takes the server down for that long (connection refused, queue, history
and the running job lost) and brings it back on the same port.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import math
import mimetypes
import socket
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import default as email_policy
from pathlib import Path
from typing import Any

import av
import numpy as np
import uvicorn
from PIL import Image, ImageDraw, ImageFilter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

OBJECT_INFO = Path(__file__).resolve().parent / "data" / "comfy_object_info.json"


@dataclass
class Faults:
    http_500: int = 0  # the next N HTTP requests answer 500
    fail_class: str | None = None  # executing a node of this class raises (execution_error)
    fail_message: str = "Motion module 'mm_sdxl_v10_beta.ckpt' is intended for SDXL models, but the provided model is type SD1.5."
    drop_ws: bool = False  # close the job's WebSockets right after execution_start
    lose_next: int = 0  # accept the next N prompts, then forget them (queue and history wiped)
    step_delay: float = 0.0  # seconds per executed node (interruptible at progress points)
    interrupt_delay: float = 0.0  # an interrupt takes effect this long after it was asked for
    ignore_targeted_interrupts: bool = False  # /interrupt with a prompt_id does nothing; without one it works


class Killed(Exception):
    """The server went down under the running job (restart): no history, no events."""


class Interrupted(Exception):
    pass


@dataclass
class Job:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra: dict[str, Any]
    outputs: list[str]


@dataclass
class Counters:
    prompts: int = 0
    interrupts: int = 0
    deletes: int = 0
    uploads: list[str] = field(default_factory=list)
    received: dict[str, dict] = field(default_factory=dict)  # prompt_id → graph as received


class ComfyStandin:
    """Start with `with ComfyStandin(tmp_path) as server:`; `server.url` is its base URL."""

    def __init__(self, root: Path, version: str = "0.3.64", extra_models: dict[tuple[str, str], list[str]] | None = None):
        self.root = Path(root)
        self.input_dir, self.output_dir, self.temp_dir = (self.root / d for d in ("input", "output", "temp"))
        for d in (self.input_dir, self.output_dir, self.temp_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.version = version
        self.object_info: dict[str, Any] = json.loads(OBJECT_INFO.read_text())
        for (class_type, input_name), names in (extra_models or {}).items():
            spec = self.object_info[class_type]["input"]["required"][input_name]
            spec[0] = list(spec[0]) + [n for n in names if n not in spec[0]]
        self.faults = Faults()
        self.counters = Counters()
        self._lock = threading.Condition()
        self._pending: list[Job] = []
        self._running: Job | None = None
        self._history: dict[str, dict] = {}
        self._number = 0
        self._interrupt = False
        self._sockets: dict[str, list[tuple[WebSocket, asyncio.AbstractEventLoop]]] = {}
        self._cache: dict[str, dict] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._stop = False
        self._killed = False
        self._server: uvicorn.Server | None = None
        self.port = 0
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> ComfyStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ComfyStandin:
        self._serve()
        self._worker = threading.Thread(target=self._work, daemon=True)
        self._worker.start()
        return self

    def _serve(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", ws="websockets-sansio", lifespan="off",
                                timeout_graceful_shutdown=1, ws_ping_interval=None)
        self._server = uvicorn.Server(config)
        self._http_thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._http_thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("stand-in ComfyUI did not start")
            time.sleep(0.02)

    def restart(self, down_s: float) -> threading.Thread:
        """Go down now (the running job dies, queue and history are wiped, like a real restart),
        come back on the same port after `down_s` seconds. Returns the thread doing it."""
        def cycle() -> None:
            with self._lock:
                self._killed = True
                self._pending.clear()
                self._history.clear()
                self._lock.notify_all()
            self._server.should_exit = True
            self._http_thread.join(10)
            deadline = time.monotonic() + 10
            while self._running is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(down_s)
            with self._lock:
                self._killed = False
                self.restarts += 1
            self._serve()

        thread = threading.Thread(target=cycle, daemon=True)
        thread.start()
        return thread

    def occupy(self, seconds: float) -> str:
        """Queue someone else's job that keeps the worker busy for `seconds`; returns its id."""
        with self._lock:
            prompt_id = f"foreign-{uuid.uuid4().hex[:8]}"
            self._number += 1
            self._pending.append(Job(self._number - 1, prompt_id, {}, {"busy_s": seconds}, []))
            self._lock.notify_all()
        return prompt_id

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._interrupt = True
            self._lock.notify_all()
        if self._server is not None:
            self._server.should_exit = True
            self._http_thread.join(5)
        self._worker.join(5)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def history_of(self, prompt_id: str) -> dict | None:
        with self._lock:
            return copy.deepcopy(self._history.get(prompt_id))

    def wait_running(self, timeout: float = 10) -> str:
        """The id of the job that is running, once one is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._running is not None:
                    return self._running.prompt_id
            time.sleep(0.01)
        raise TimeoutError("no job started running")

    # ---------------------------------------------------------------------- HTTP

    def _app(self) -> Any:
        routes = []
        for prefix in ("", "/api"):
            routes += [
                Route(f"{prefix}/system_stats", self._system_stats),
                Route(f"{prefix}/object_info", self._object_info_all),
                Route(prefix + "/object_info/{node_class:path}", self._object_info_one),
                Route(f"{prefix}/prompt", self._prompt, methods=["GET", "POST"]),
                Route(f"{prefix}/queue", self._queue, methods=["GET", "POST"]),
                Route(f"{prefix}/interrupt", self._interrupt_route, methods=["POST"]),
                Route(f"{prefix}/history", self._history_all, methods=["GET", "POST"]),
                Route(prefix + "/history/{prompt_id}", self._history_one),
                Route(f"{prefix}/upload/image", self._upload, methods=["POST"]),
                Route(f"{prefix}/view", self._view),
                WebSocketRoute(f"{prefix}/ws", self._ws),
            ]
        app = Starlette(routes=routes)
        standin = self

        async def with_faults(scope: dict, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and standin.faults.http_500 > 0:
                standin.faults.http_500 -= 1
                await Response("Internal Server Error (stand-in fault)", status_code=500)(scope, receive, send)
                return
            await app(scope, receive, send)

        return with_faults

    async def _system_stats(self, request: Request) -> JSONResponse:
        return JSONResponse({"system": {"os": "posix", "ram_total": 64 << 30, "ram_free": 48 << 30,
                                        "comfyui_version": self.version, "python_version": "3.12.3",
                                        "pytorch_version": "2.8.0+cpu", "embedded_python": False, "argv": ["main.py"]},
                             "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 0,
                                          "vram_free": 0, "torch_vram_total": 0, "torch_vram_free": 0}]})

    async def _object_info_all(self, request: Request) -> JSONResponse:
        return JSONResponse(self.object_info)

    async def _object_info_one(self, request: Request) -> JSONResponse:
        name = request.path_params["node_class"]
        return JSONResponse({name: self.object_info[name]} if name in self.object_info else {})

    async def _prompt(self, request: Request) -> JSONResponse:
        if request.method == "GET":
            with self._lock:
                remaining = len(self._pending) + (1 if self._running else 0)
            return JSONResponse({"exec_info": {"queue_remaining": remaining}})
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.counters.prompts += 1
        prompt = body.get("prompt") if isinstance(body, dict) else None
        if not isinstance(prompt, dict):
            return JSONResponse({"error": {"type": "no_prompt", "message": "No prompt provided",
                                           "details": "No prompt provided", "extra_info": {}}, "node_errors": {}},
                                status_code=400)
        status, payload, outputs = self._validate(prompt)
        if status != 200:
            return JSONResponse(payload, status_code=status)
        own = body.get("prompt_id") if tuple(int(x) for x in self.version.split(".")) >= (0, 3, 44) else None
        prompt_id = str(own or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if body.get("client_id"):
            extra["client_id"] = body["client_id"]
        with self._lock:
            number = float(body.get("number", self._number))
            if body.get("front"):
                number = -number
            self._number += 1
            self.counters.received[prompt_id] = copy.deepcopy(prompt)
            if self.faults.lose_next > 0:  # accepted, then wiped as by a restart
                self.faults.lose_next -= 1
            else:
                self._pending.append(Job(number, prompt_id, prompt, extra, outputs))
                self._lock.notify_all()
        return JSONResponse({"prompt_id": prompt_id, "number": number, "node_errors": payload["node_errors"]})

    def _queue_item(self, job: Job) -> list:
        return [job.number, job.prompt_id, job.prompt, job.extra, job.outputs]

    async def _queue(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await request.json()
            with self._lock:
                if body.get("clear"):
                    self._pending.clear()
                for pid in body.get("delete", []):
                    before = len(self._pending)
                    self._pending = [j for j in self._pending if j.prompt_id != pid]
                    self.counters.deletes += before - len(self._pending)
            return JSONResponse({})
        with self._lock:
            running = [self._queue_item(self._running)] if self._running else []
            pending = [self._queue_item(j) for j in self._pending]
        return JSONResponse({"queue_running": running, "queue_pending": pending})

    async def _interrupt_route(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
        except ValueError:
            body = {}
        with self._lock:
            self.counters.interrupts += 1
            running = self._running
        if running is None:
            return JSONResponse({})
        if body.get("prompt_id") and self.faults.ignore_targeted_interrupts:
            return JSONResponse({})

        def fire() -> None:
            with self._lock:
                if self._running is running:
                    self._interrupt = True

        if self.faults.interrupt_delay > 0:
            threading.Timer(self.faults.interrupt_delay, fire).start()
        else:
            fire()
        return JSONResponse({})

    async def _history_all(self, request: Request) -> JSONResponse:
        if request.method == "POST":
            body = await request.json()
            with self._lock:
                if body.get("clear"):
                    self._history.clear()
                for pid in body.get("delete", []):
                    self._history.pop(pid, None)
            return JSONResponse({})
        max_items = request.query_params.get("max_items")
        with self._lock:
            items = list(self._history.items())
        if max_items:
            items = items[-int(max_items):]
        return JSONResponse(dict(items))

    async def _history_one(self, request: Request) -> JSONResponse:
        pid = request.path_params["prompt_id"]
        with self._lock:
            entry = self._history.get(pid)
        return JSONResponse({pid: entry} if entry else {})

    async def _upload(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        raw = await request.body()
        message = BytesParser(policy=email_policy).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + raw)
        fields: dict[str, str] = {}
        image: tuple[str, bytes] | None = None
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            filename = part.get_filename()
            if name == "image" and filename is not None:
                image = (filename, part.get_payload(decode=True))
            elif name:
                fields[name] = part.get_content().strip() if part.get_content_type().startswith("text") \
                    else part.get_payload(decode=True).decode()
        if image is None or not image[0]:
            return Response(status_code=400)
        kind = fields.get("type") or "input"
        base = {"input": self.input_dir, "temp": self.temp_dir, "output": self.output_dir}[kind]
        subfolder = fields.get("subfolder", "")
        folder = (base / subfolder).resolve()
        if base.resolve() not in (folder, *folder.parents):
            return Response(status_code=403)
        folder.mkdir(parents=True, exist_ok=True)
        filename, data = image
        stem, suffix = Path(filename).stem, Path(filename).suffix
        target = folder / filename
        if fields.get("overwrite") not in ("true", "1"):
            i = 1
            while target.exists():
                if target.read_bytes() == data:
                    break
                filename = f"{stem} ({i}){suffix}"
                target = folder / filename
                i += 1
        if not (target.exists() and target.read_bytes() == data):
            target.write_bytes(data)
        self.counters.uploads.append(f"{subfolder}/{filename}" if subfolder else filename)
        return JSONResponse({"name": filename, "subfolder": subfolder, "type": kind})

    async def _view(self, request: Request) -> Response:
        q = request.query_params
        filename = q.get("filename", "")
        if not filename or ".." in filename or filename.startswith("/"):
            return Response(status_code=400)
        base = {"input": self.input_dir, "temp": self.temp_dir, "output": self.output_dir}.get(q.get("type") or "output")
        if base is None:
            return Response(status_code=400)
        path = (base / q.get("subfolder", "") / filename).resolve()
        if base.resolve() not in path.parents:
            return Response(status_code=403)
        if not path.is_file():
            return Response(status_code=404)
        return FileResponse(path, media_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream")

    # ----------------------------------------------------------------- WebSocket

    async def _ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        sid = websocket.query_params.get("clientId") or uuid.uuid4().hex
        entry = (websocket, asyncio.get_running_loop())
        self._sockets.setdefault(sid, []).append(entry)
        try:
            with self._lock:
                remaining = len(self._pending) + (1 if self._running else 0)
            await websocket.send_text(json.dumps({"type": "status", "data": {
                "status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}}))
            while True:
                text = await websocket.receive_text()
                try:
                    message = json.loads(text)
                except ValueError:
                    continue
                if message.get("type") == "feature_flags":
                    await websocket.send_text(json.dumps({"type": "feature_flags", "data": {
                        "supports_preview_metadata": True, "max_upload_size": 100 << 20}}))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if entry in self._sockets.get(sid, []):
                self._sockets[sid].remove(entry)

    def _send(self, kind: str, data: dict, client_id: str | None) -> None:
        """Execution events go to the job's client only; `status` goes to everyone."""
        targets = [e for sid, entries in list(self._sockets.items()) for e in list(entries)
                   if client_id is None or sid == client_id]
        text = json.dumps({"type": kind, "data": data})
        for websocket, loop in targets:
            try:
                asyncio.run_coroutine_threadsafe(websocket.send_text(text), loop).result(2)
            except Exception:
                pass

    def _drop_sockets(self, client_id: str) -> None:
        for websocket, loop in list(self._sockets.get(client_id, [])):
            try:
                asyncio.run_coroutine_threadsafe(websocket.close(code=1011), loop).result(2)
            except Exception:
                pass
        self._sockets.pop(client_id, None)

    # ---------------------------------------------------------------- validation

    def _validate(self, prompt: dict[str, Any]) -> tuple[int, dict, list[str]]:
        """ComfyUI 0.3.64's validate_prompt: first unknown class → invalid_prompt; otherwise every
        output node is validated upstream (stopping at a type mismatch); 400 if none survive."""
        for nid, node in prompt.items():
            class_type = node.get("class_type") if isinstance(node, dict) else None
            if class_type is None:
                return 400, self._error("invalid_prompt", "Cannot execute because a node is missing the class_type property.",
                                        f"Node ID '#{nid}'"), []
            if class_type not in self.object_info:
                return 400, self._error("invalid_prompt", f"Cannot execute because node {class_type} does not exist.",
                                        f"Node ID '#{nid}'"), []
        outputs = [nid for nid, node in prompt.items() if self.object_info[node["class_type"]].get("output_node")]
        if not outputs:
            return 400, self._error("prompt_no_outputs", "Prompt has no outputs", ""), []
        validated: dict[str, tuple[bool, list[dict]]] = {}
        good = [o for o in outputs if self._validate_node(prompt, o, validated)]
        node_errors = {}
        for nid, (_, errors) in validated.items():
            if errors:
                node_errors[nid] = {"errors": errors, "dependent_outputs": [o for o in outputs if o not in good],
                                    "class_type": prompt[nid]["class_type"]}
        if not good:
            body = self._error("prompt_outputs_failed_validation", "Prompt outputs failed validation", "")
            body["node_errors"] = node_errors
            return 400, body, []
        return 200, {"node_errors": node_errors}, good

    @staticmethod
    def _error(kind: str, message: str, details: str) -> dict:
        return {"error": {"type": kind, "message": message, "details": details, "extra_info": {}}, "node_errors": {}}

    def _validate_node(self, prompt: dict, nid: str, validated: dict) -> bool:
        if nid in validated:
            return validated[nid][0]
        validated[nid] = (True, [])
        node = prompt[nid]
        schema = self.object_info[node["class_type"]]["input"]
        inputs = node.get("inputs", {})
        errors: list[dict] = []
        valid = True

        def err(kind: str, message: str, details: str, name: str, spec: Any, value: Any = None) -> None:
            errors.append({"type": kind, "message": message, "details": details,
                           "extra_info": {"input_name": name, "input_config": spec, "received_value": value}})

        specs = {**{k: (v, False) for k, v in schema.get("optional", {}).items()},
                 **{k: (v, True) for k, v in schema.get("required", {}).items()}}
        for name, (spec, required) in specs.items():
            if name not in inputs:
                if required:
                    err("required_input_missing", "Required input is missing", name, name, spec)
                continue
            value, kind = inputs[name], spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(value, list):
                if len(value) != 2 or str(value[0]) not in prompt:
                    err("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]", name, name, spec, value)
                    continue
                source = prompt[str(value[0])]
                returns = self.object_info[source["class_type"]]["output"]
                received = returns[value[1]] if isinstance(value[1], int) and 0 <= value[1] < len(returns) else None
                if received is None:
                    err("bad_linked_input", "Bad linked input, must be a length-2 list of [string, int]", name, name, spec, value)
                    continue
                if isinstance(kind, str) and kind not in ("*", "COMBO") and received != "*" \
                        and not set(received.split(",")) & set(kind.split(",")):
                    err("return_type_mismatch", "Return type mismatch between linked nodes",
                        f"{name}, received_type({received}) mismatch input_type({kind})", name, spec)
                    continue
                if not self._validate_node(prompt, str(value[0]), validated):
                    valid = False
                continue
            try:
                if kind == "INT":
                    value = int(value)
                elif kind == "FLOAT":
                    value = float(value)
                elif kind == "STRING":
                    value = str(value)
                elif kind == "BOOLEAN":
                    value = bool(value)
            except (TypeError, ValueError):
                err("invalid_input_type", f"Failed to convert an input value to a {kind} value", f"{name}, {value}",
                    name, spec, value)
                continue
            if "min" in opts and isinstance(value, (int, float)) and value < opts["min"]:
                err("value_smaller_than_min", f"Value {value} smaller than min of {opts['min']}", name, name, spec, value)
                continue
            if "max" in opts and isinstance(value, (int, float)) and value > opts["max"]:
                err("value_bigger_than_max", f"Value {value} bigger than max of {opts['max']}", name, name, spec, value)
                continue
            if isinstance(kind, list):  # V1 combos only: V3 "COMBO" values are not checked (0.3.64)
                if opts.get("image_upload"):
                    if not self._input_file(value).is_file():
                        err("custom_validation_failed", "Custom validation failed for node",
                            f"image - Invalid image file: {value}", name, spec, value)
                elif value not in kind:
                    err("value_not_in_list", "Value not in list", f"{name}: '{value}' not in {kind}", name, spec, value)
        if errors:
            valid = False
        validated[nid] = (valid, errors)
        return valid

    def _input_file(self, value: str) -> Path:
        kind = "input"
        if value.endswith("]") and " [" in value:
            value, kind = value[:-1].rsplit(" [", 1)
        base = {"input": self.input_dir, "temp": self.temp_dir, "output": self.output_dir}.get(kind, self.input_dir)
        return base / value

    # ------------------------------------------------------------------ execution

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stop:
                    self._lock.wait(0.5)
                if self._stop:
                    return
                self._pending.sort(key=lambda j: j.number)
                job = self._pending.pop(0)
                self._running = job
                self._interrupt = False
            try:
                self._execute(job)
            except Exception:
                traceback.print_exc()
            finally:
                with self._lock:
                    self._running = None

    def _execute(self, job: Job) -> None:
        if job.extra.get("busy_s") is not None:  # someone else's job: just keeps the worker busy
            ends = time.monotonic() + float(job.extra["busy_s"])
            while time.monotonic() < ends and not (self._interrupt or self._stop or self._killed):
                time.sleep(0.02)
            with self._lock:
                if not self._killed:
                    self._history[job.prompt_id] = {"prompt": [job.number, job.prompt_id, {}, {}, []], "outputs": {},
                                                    "status": {"status_str": "success", "completed": True,
                                                               "messages": []}, "meta": {}}
            return
        cid = job.extra.get("client_id")
        pid = job.prompt_id
        messages: list[list] = []

        def event(kind: str, data: dict, record: bool = False) -> None:
            data = {**data, "prompt_id": pid}
            if record:
                messages.append([kind, {**data, "timestamp": int(time.time() * 1000)}])
            self._send(kind, data, cid)

        self._send("status", {"status": {"exec_info": {"queue_remaining": len(self._pending) + 1}}}, None)
        event("execution_start", {"timestamp": int(time.time() * 1000)}, record=True)
        if self.faults.drop_ws and cid:
            self._drop_sockets(cid)
        key = hashlib.sha256(json.dumps(job.prompt, sort_keys=True).encode()).hexdigest()
        outputs: dict[str, dict] = {}
        status = "success"
        if key in self._cache:  # fully cached rerun: old filenames, no new files
            event("execution_cached", {"nodes": list(job.prompt), "timestamp": 0}, record=True)
            outputs = copy.deepcopy(self._cache[key])
            for nid, output in outputs.items():
                event("executed", {"node": nid, "display_node": nid, "output": output})
        else:
            event("execution_cached", {"nodes": [], "timestamp": 0}, record=True)
            runner = _Runner(self, job, event, outputs)
            try:
                for out in job.outputs:
                    runner.value(out)
                self._cache[key] = copy.deepcopy(outputs)
            except Killed:
                return  # the server died under it: nothing is written, nobody is told
            except Interrupted:
                status = "error"
                node = runner.current or ""
                event("execution_interrupted", {"node_id": node, "node_type": job.prompt.get(node, {}).get("class_type", ""),
                                                "executed": list(runner.done)}, record=True)
            except Exception as error:
                status = "error"
                node = runner.current or ""
                event("execution_error", {"node_id": node, "node_type": job.prompt.get(node, {}).get("class_type", ""),
                                          "executed": list(runner.done), "exception_message": str(error),
                                          "exception_type": type(error).__name__,
                                          "traceback": traceback.format_exception(error), "current_inputs": {},
                                          "current_outputs": {}}, record=True)
        if status == "success":
            event("execution_success", {"timestamp": int(time.time() * 1000)}, record=True)
        with self._lock:
            self._history[pid] = {
                "prompt": [job.number, pid, job.prompt, job.extra, job.outputs],
                "outputs": outputs if status == "success" else {},
                "status": {"status_str": status, "completed": status == "success", "messages": messages},
                "meta": {nid: {"node_id": nid, "display_node": nid, "parent_node": None, "real_node_id": nid}
                         for nid in outputs},
            }
            self._running = None
        self._send("status", {"status": {"exec_info": {"queue_remaining": len(self._pending)}}}, None)
        event("executing", {"node": None})

    def save_name(self, prefix: str, ext: str, kind: str = "output") -> tuple[Path, str, str]:
        """ComfyUI's naming: `prefix_00001_.png`, a `/` in the prefix makes the subfolder."""
        subfolder, _, stem = prefix.rpartition("/")
        base = self.output_dir if kind == "output" else self.temp_dir
        folder = base / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        counter = self._counters.get((kind, prefix), 0) + 1
        self._counters[(kind, prefix)] = counter
        filename = f"{stem}_{counter:05}_{ext}" if ext.startswith(".") else f"{stem}_{counter:05}.{ext}"
        return folder / filename, filename, subfolder


# ------------------------------------------------------------------------- the "models"


class _Runner:
    """Evaluates the graph's nodes on demand, like ComfyUI's executor, with stand-in maths."""

    def __init__(self, server: ComfyStandin, job: Job, event: Any, outputs: dict):
        self.server, self.job, self.event, self.outputs = server, job, event, outputs
        self.values: dict[str, tuple] = {}
        self.done: list[str] = []
        self.current: str | None = None

    def check_interrupt(self) -> None:
        if self.server._killed:
            raise Killed
        if self.server._interrupt or self.server._stop:
            raise Interrupted

    def value(self, nid: str) -> tuple:
        if nid in self.values:
            return self.values[nid]
        node = self.job.prompt[nid]
        args = {}
        for name, value in node.get("inputs", {}).items():
            if isinstance(value, list) and len(value) == 2 and str(value[0]) in self.job.prompt:
                args[name] = self.value(str(value[0]))[value[1]]
            else:
                args[name] = value
        self.current = nid
        self.check_interrupt()
        self.event("executing", {"node": nid, "display_node": nid})
        delay = self.server.faults.step_delay
        while delay > 0:  # slow node: interrupts are honoured at these "progress points"
            time.sleep(min(0.05, delay))
            delay -= 0.05
            self.check_interrupt()
        class_type = node["class_type"]
        if class_type == self.server.faults.fail_class:
            raise RuntimeError(self.server.faults.fail_message)
        handler = getattr(self, "n_" + class_type.replace(" ", "_"), None)
        result = handler(nid, **args) if handler else ({"kind": class_type, "from": args},) * 3
        self.values[nid] = result
        self.done.append(nid)
        return result

    def executed(self, nid: str, output: dict) -> None:
        self.outputs[nid] = output
        self.event("executed", {"node": nid, "display_node": nid, "output": output})

    def progress(self, nid: str, steps: int) -> None:
        for i in range(1, steps + 1):
            self.check_interrupt()
            self.event("progress", {"value": i, "max": steps, "node": nid})

    # loaders and conditioning: tokens that carry what later nodes need to know

    def n_CheckpointLoaderSimple(self, nid, ckpt_name, **_):
        return ({"kind": "MODEL", "ckpt": ckpt_name}, {"kind": "CLIP", "ckpt": ckpt_name}, {"kind": "VAE"})

    def n_LoraLoader(self, nid, model, clip, lora_name, strength_model, **_):
        return ({**model, "lora": lora_name, "lora_strength": strength_model}, {**clip, "lora": lora_name})

    def n_CLIPTextEncode(self, nid, text, clip, **_):
        return ({"kind": "CONDITIONING", "text": text, "lora": clip.get("lora")},)

    def n_ControlNetApplyAdvanced(self, nid, positive, negative, control_net, image, strength, **_):
        return ({**positive, "control": image[0], "control_strength": strength}, negative)

    def n_IPAdapterUnifiedLoader(self, nid, model, preset, **_):
        return (model, {"kind": "IPADAPTER", "preset": preset})

    def n_IPAdapterAdvanced(self, nid, model, ipadapter, image, weight, **_):
        return ({**model, "reference": image[0], "reference_weight": weight},)

    def n_ADE_LoadAnimateDiffModel(self, nid, model_name, **_):
        return ({"kind": "MOTION_MODEL_ADE", "name": model_name},)

    def n_ADE_MultivalDynamic(self, nid, float_val, **_):
        return (float(float_val),)

    def n_ADE_ApplyAnimateDiffModelSimple(self, nid, motion_model, scale_multival=1.0, **_):
        return ({"kind": "M_MODELS", "name": motion_model["name"], "scale": scale_multival},)

    def n_ADE_UseEvolvedSampling(self, nid, model, beta_schedule, m_models=None, **_):
        sdxl_module = m_models and "sdxl" in m_models["name"]
        sdxl_ckpt = "xl" in model.get("ckpt", "")
        if m_models and sdxl_module != sdxl_ckpt:  # ADE raises this only at execution, too
            raise ValueError(f"Motion module '{m_models['name']}' is intended for "
                             f"{'SDXL' if sdxl_module else 'SD1.5'} models, but the provided model is type "
                             f"{'SDXL' if sdxl_ckpt else 'SD1.5'}.")
        return ({**model, "motion": m_models},)

    # pictures

    def n_LoadImage(self, nid, image, **_):
        """IMAGE and MASK as ComfyUI makes them: the mask is 1 − alpha (no alpha: all 0)."""
        with Image.open(self.server._input_file(image)) as img:
            rgb = img.convert("RGB")
            if "A" in img.getbands():
                mask = img.getchannel("A").point(lambda v: 255 - v)
            else:
                mask = Image.new("L", img.size, 0)
            return ([rgb], [mask])

    def n_ImageCompositeMasked(self, nid, destination, source, x, y, resize_source, mask=None, **_):
        out = []
        for i, dest in enumerate(destination):
            src = source[min(i, len(source) - 1)]
            if resize_source:
                src = src.resize(dest.size, Image.BILINEAR)
            layer = dest.copy()
            m = mask[min(i, len(mask) - 1)].resize(src.size) if mask else Image.new("L", src.size, 255)
            layer.paste(src, (int(x), int(y)), m)
            out.append(layer)
        return (out,)

    def n_ImageScale(self, nid, image, upscale_method, width, height, crop, **_):
        out = []
        for img in image:
            if crop == "center":
                scale = max(width / img.width, height / img.height)
                big = img.resize((max(width, round(img.width * scale)), max(height, round(img.height * scale))),
                                 Image.LANCZOS)
                x, y = (big.width - width) // 2, (big.height - height) // 2
                out.append(big.crop((x, y, x + width, y + height)))
            else:
                out.append(img.resize((width, height), Image.LANCZOS))
        return (out,)

    def n_RepeatImageBatch(self, nid, image, amount, **_):
        return ([img.copy() for _ in range(amount) for img in image],)

    def n_EmptyLatentImage(self, nid, width, height, batch_size, **_):
        return ({"kind": "LATENT", "size": (width, height), "batch": batch_size, "images": None},)

    def n_VAEEncode(self, nid, pixels, vae, **_):
        return ({"kind": "LATENT", "size": pixels[0].size, "batch": len(pixels), "images": pixels},)

    def n_KSampler(self, nid, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image,
                   denoise, **_):
        self.progress(nid, min(int(steps), 4))
        rng = np.random.default_rng(int(seed) % 2 ** 32 + int(hashlib.sha256(positive["text"].encode()).hexdigest()[:6], 16))
        w, h = latent_image["size"]
        if latent_image["images"] is None:
            frames = [_picture(rng, w, h, positive, model) for _ in range(latent_image["batch"])]
        elif not model.get("motion"):  # img2img: a new picture, the input showing through by 1 − denoise
            frames = [Image.blend(_picture(rng, w, h, positive, model), img.resize((w, h)), 1 - float(denoise))
                      for img in latent_image["images"]]
        else:
            motion = model.get("motion")
            count = len(latent_image["images"])
            tint = tuple(int(c) for c in rng.integers(0, 255, 3))
            frames = []
            for i, img in enumerate(latent_image["images"]):
                t = i / max(1, count - 1)
                if motion:
                    zoom = 1 + 0.18 * motion["scale"] * t
                    cw, ch = w / zoom, h / zoom
                    dx = (w - cw) * (0.5 + 0.4 * math.sin(t * math.pi) * motion["scale"])
                    img = img.resize((w, h), Image.BICUBIC, box=(dx, (h - ch) / 2, dx + cw, (h + ch) / 2))
                frames.append(Image.blend(img, Image.new("RGB", img.size, tint), 0.12 * float(denoise)))
        return ({"kind": "LATENT", "size": (w, h), "batch": len(frames), "images": frames},)

    def n_VAEDecode(self, nid, samples, vae, **_):
        return (samples["images"],)

    def n_RIFE_VFI(self, nid, frames, multiplier, **_):
        arrays = [np.asarray(f, dtype=np.float32) for f in frames]
        out = []
        for a, b in zip(arrays, arrays[1:]):
            for k in range(multiplier):
                out.append(Image.fromarray(np.uint8(a + (b - a) * (k / multiplier) + 0.5)))
        out.append(frames[-1])
        self.progress(nid, 2)
        return (out,)

    def n_SaveImage(self, nid, images, filename_prefix, **_):
        return self._save(nid, images, filename_prefix, "output")

    def n_PreviewImage(self, nid, images, **_):
        return self._save(nid, images, "ComfyUI_temp_" + uuid.uuid4().hex[:5], "temp")

    def _save(self, nid, images, prefix, kind):
        results = []
        for img in images:
            path, filename, subfolder = self.server.save_name(prefix, ".png", kind)
            img.save(path, "PNG")
            results.append({"filename": filename, "subfolder": subfolder, "type": kind})
        self.executed(nid, {"images": results})
        return ()

    def n_VHS_VideoCombine(self, nid, images, frame_rate, loop_count, filename_prefix, format, pingpong=False,  # noqa: A002
                           save_output=True, crf=19, pix_fmt="yuv420p", **_):
        if pingpong:
            images = images + images[-2:0:-1]
        kind = "output" if save_output else "temp"
        ext = {"video/h264-mp4": "mp4", "image/gif": "gif", "image/webp": "webp"}.get(format)
        if ext is None:
            raise ValueError(f"stand-in VHS does not write {format}")
        path, filename, subfolder = self.server.save_name(filename_prefix, ext, kind)
        workflow = path.with_suffix(".png")
        images[0].save(workflow, "PNG")
        if ext == "mp4":
            with av.open(str(path), "w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=round(float(frame_rate)))
                stream.width, stream.height = images[0].width // 2 * 2, images[0].height // 2 * 2
                stream.pix_fmt = pix_fmt
                stream.options = {"crf": str(crf), "preset": "ultrafast"}
                for i, img in enumerate(images):
                    if i % 8 == 0:
                        self.check_interrupt()
                    frame = av.VideoFrame.from_image(img.crop((0, 0, stream.width, stream.height)))
                    for packet in stream.encode(frame):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
        else:
            images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / float(frame_rate)),
                           loop=loop_count)
        self.executed(nid, {"gifs": [{"filename": filename, "subfolder": subfolder, "type": kind, "format": format,
                                      "frame_rate": float(frame_rate), "workflow": workflow.name,
                                      "fullpath": str(path)}]})
        return ()


def _picture(rng: np.random.Generator, w: int, h: int, positive: dict, model: dict) -> Image.Image:
    """A stand-in 'generation': a seed-dependent gradient with soft shapes; a ControlNet guide is
    drawn in, an IPAdapter reference is mixed in, a LoRA warms the palette."""
    top, bottom = rng.integers(30, 225, 3), rng.integers(30, 225, 3)
    if model.get("lora"):
        top = np.clip(top + [40, 10, -20], 0, 255)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    rows = top * (1 - t) + bottom * t
    img = Image.fromarray(np.repeat(rows, w, axis=1).astype(np.uint8))
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(6):
        r = int(rng.integers(w // 12, w // 4))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        d.ellipse((x - r, y - r, x + r, y + r), fill=(*(int(c) for c in rng.integers(0, 255, 3)), 90))
    img = Image.alpha_composite(img.convert("RGBA"), layer.filter(ImageFilter.GaussianBlur(w // 40))).convert("RGB")
    if positive.get("control") is not None:
        guide = positive["control"].convert("L").resize((w, h))
        img.paste(Image.new("RGB", (w, h), (250, 250, 245)), mask=guide.point(lambda v: int(v * 0.8)))
    if model.get("reference") is not None:
        img = Image.blend(img, model["reference"].convert("RGB").resize((w, h)), 0.3 * float(model["reference_weight"]))
    return img
