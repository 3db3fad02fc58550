"""`sparklio`: make an ad from a brief on the command line, through Dagster.

    sparklio generate BRIEF.json [--brand BRAND.json] [--out DIR] [--quality draft|standard|premium]
                                 [--engine auto|local|cloud|hybrid]
    sparklio demo [--out DIR]
    sparklio remake-scene JOB_ID SCENE_ID [--out DIR]
    sparklio run-job JOB_ID [--scene SCENE_ID] [--out DIR] [--run-config JSON]   (the API's detached worker)
    sparklio serve [--host HOST] [--port PORT] [--out DIR]   (the REST API, see api/)
    sparklio ui [--host HOST] [--port PORT] [--out DIR] [--media-port PORT]
                                 (the Dagster UI on the same instance, and the media its previews show)
    sparklio worker check [URL] [--config sparklio.yaml]     (is the GPU worker ready?)

`--config FILE` (or $SPARKLIO_CONFIG, or ./sparklio.yaml) sets the resources, e.g. the `comfy:`
section: worker URL, waits, steps, cfg, sizes (resources/comfyui/config.py).

A bad brief is reported on one line naming the field and the reason, with exit code 2, before
anything is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.resources import files
from pathlib import Path
from typing import get_args

from pydantic import ValidationError

from .models import BrandKit, Brief, EnginePreference, JobSpec, Quality, describe_validation_error

EXIT_BAD_INPUT = 2
EXIT_FAILED_CHECKS = 3


class InputError(Exception):
    pass


def _load(path: Path, model: type, label: str):
    try:
        if model is BrandKit:  # file paths in a brand kit are relative to the kit's JSON
            return BrandKit.from_file(path)
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{label}: file {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{label}: {path} is a folder, not a JSON file") from None
    except OSError as error:
        raise InputError(f"{label}: cannot read {path} ({error.strerror or error})") from None
    except RecursionError:
        raise InputError(f"{label}: {path} is nested too deeply to be a {label}") from None
    except ValidationError as error:
        raise InputError(describe_validation_error(error, label)) from None
    except ValueError as error:  # JSON syntax, undecodable bytes, a number too long to convert
        raise InputError(f"{label}: {path} is not valid JSON ({error})") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise InputError(describe_validation_error(error, label)) from None


def _print(line: str) -> None:
    print(line, flush=True)


ECHO_LIMIT = 300  # characters of a reason the terminal shows; the full text is in the log


def _fail(error: Exception, code: int = 1) -> int:
    """A failure in one line (never a traceback), and where the full story is."""
    text = " ".join(str(error).split())
    print(f"error: {text[:ECHO_LIMIT] + '…' if len(text) > ECHO_LIMIT else text}", file=sys.stderr)
    if log := getattr(error, "log", None):
        print(f"  full log: {log}", file=sys.stderr)
    elif "failed (run" in text:
        print("  full log: each run's events in the Dagster UI (`sparklio ui`) and jobs/<id>/logs/", file=sys.stderr)
    return code


def _session(out: str | None):
    """Point SPARKLIO_HOME / DAGSTER_HOME where the user asked, then load Dagster."""
    if out:
        os.environ["SPARKLIO_HOME"] = str(Path(out).resolve())
    from dagster import DagsterInstance

    from resources.artifacts import ArtifactStore

    from . import liveness
    from .definitions import defs
    from .pipeline import ensure_dagster_home

    store = ArtifactStore()
    ensure_dagster_home(store.folder)
    instance = DagsterInstance.get()
    liveness.reap(instance, store)  # end what dead workers left in flight, free their pool slots
    liveness.sweep(store)
    return defs, instance, store


def _no_such_job(job_id: str, store, out: str | None) -> str:
    """Which folder was searched, and which setting pointed there."""
    setting = "--out" if out else ("$SPARKLIO_HOME" if os.environ.get("SPARKLIO_HOME") else
                                   "the default ~/.sparklio; set --out or $SPARKLIO_HOME")
    return f"job {job_id}: no such job in {store.root} (the media folder from {setting})"


def _print_checks(store, job_id: str) -> bool:
    """The quality checks as ✓/✗ lines with their measurements; True when all passed."""
    from .checks import read_report

    report = read_report(store, job_id)
    if report is None:
        _print("checks: not run")
        return True
    for check in report["checks"]:
        _print(f"  {'✓' if check['passed'] else '✗'} check {check['name']:<16} {check['summary']}")
    return bool(report["passed"])


def generate(spec: JobSpec, out: str | None, allow_failed_checks: bool = False) -> int:
    from . import liveness, resume, store_paths
    from .pipeline import PipelineError, StageReport, create_job, run_job

    defs, instance, store = _session(out)
    try:
        previous = store_paths.read_job(store, spec.job_id)
    except (FileNotFoundError, ValueError):
        previous = None
    # The same request for a job an interruption left unfinished picks up where it stopped.
    resuming = resume.same_request(previous, spec) and resume.storyboard_current(instance, store, spec.job_id)
    if resuming:
        spec = previous
    elif liveness.is_held(store.job_dir(spec.job_id)):
        return _fail(RuntimeError(f"job {spec.job_id} is being made by another process"))
    else:
        spec = create_job(spec, instance, store)
    _print(f"job {spec.job_id}: {spec.brief.product}, {spec.brief.duration} s, quality {spec.quality}")
    if resuming:
        scenes = [s.id for s in store_paths.read_storyboard(store, spec.job_id).scenes]
        kept = ["storyboard", *sorted(resume.finished_scenes(instance, store, spec.job_id, scenes))]
        _print(f"  resuming: {', '.join(kept)} already made")
    _print(f"  media: {store.job_dir(spec.job_id)}")
    _print(f"  dagster: runs recorded in {os.environ['DAGSTER_HOME']} (see them with `sparklio ui"
           f"{' --out ' + str(store.folder) if out else ''}`)")

    def report(stage: StageReport) -> None:
        engines = ", ".join(f"{k} by {v}" for k, v in stage.engines.items())
        _print(f"  ✓ {stage.stage:<12} {stage.seconds:6.2f} s  {engines}")

    try:
        record = run_job(spec.job_id, defs, instance, store, on_stage=report, reuse_storyboard=resuming)
    except (PipelineError, liveness.JobBusy) as error:
        return _fail(error)
    _print(f"video: {record.video_path}")
    _print(f"  {record.duration:.2f} s, {record.resolution}, {record.fps:g} fps, "
           f"{record.bitrate / 1e6:.1f} Mbps, {record.size_bytes / 1e6:.1f} MB, {record.scenes_count} scenes")
    if (audio := record.audio) is not None:
        _print(f"  audio: {audio.codec} {audio.sample_rate / 1000:g} kHz, {audio.loudness_lufs:.1f} LUFS, "
               f"{audio.narration_lines} narration lines")
        for note in audio.notes:
            _print(f"  note: {note}")
    _print(f"thumbnail: {record.thumbnail_path}")
    for fmt, path in record.renditions.items():
        _print(f"{fmt} rendition: {path}")
    if not _print_checks(store, spec.job_id):
        if allow_failed_checks:
            _print("some checks failed (--allow-failed-checks: exit 0)")
            return 0
        _print(f"error: some quality checks failed (exit {EXIT_FAILED_CHECKS}; pass --allow-failed-checks to accept)")
        return EXIT_FAILED_CHECKS
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sparklio", description="Brief in, finished vertical ad out.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="make an ad from a brief JSON file")
    gen.add_argument("brief", type=Path)
    gen.add_argument("--brand", type=Path, help="brand kit JSON")
    gen.add_argument("--out", help="media folder (default $SPARKLIO_HOME or ~/.sparklio)")
    gen.add_argument("--quality", choices=get_args(Quality), default="draft",
                     help="draft: built-in engines; standard/premium: ComfyUI when configured")
    gen.add_argument("--engine", choices=get_args(EnginePreference), default="auto",
                     help="LLM route for the storyboard (local = Ollama only)")
    gen.add_argument("--job-id", help="name the job (default: <product>-<date>-<short id>)")
    gen.add_argument("--allow-failed-checks", action="store_true",
                     help="exit 0 even when a quality check fails (default: exit 3)")
    demo = sub.add_parser("demo", help="make the sample eye-cream ad shipped with the package")
    demo.add_argument("--out", default="demo_output")
    remake = sub.add_parser("remake-scene", help="re-make one scene of a job and re-assemble its video")
    remake.add_argument("job_id")
    remake.add_argument("scene_id")
    remake.add_argument("--out")
    run_p = sub.add_parser("run-job", help="make the video of an existing job (the API's worker); skips a "
                                         "storyboard that is already materialized")
    run_p.add_argument("job_id")
    run_p.add_argument("--scene", help="only re-make this scene, then re-assemble")
    run_p.add_argument("--out")
    run_p.add_argument("--run-config", default="", help="Dagster run config as JSON (e.g. resource overrides)")
    serve_p = sub.add_parser("serve", help="start the REST API (OpenAPI docs at /docs)")
    serve_p.add_argument("--host", default=os.environ.get("SPARKLIO_HOST", "127.0.0.1"))
    serve_p.add_argument("--port", type=int, default=int(os.environ.get("SPARKLIO_PORT", "8000")))
    serve_p.add_argument("--out", help="media folder (default $SPARKLIO_HOME or ~/.sparklio)")
    serve_p.add_argument("--log-level", default="info")
    ui_p = sub.add_parser("ui", help="start the Dagster UI (dagster dev) on this media folder's instance")
    ui_p.add_argument("--host", default="127.0.0.1")
    ui_p.add_argument("--port", type=int, default=3000)
    ui_p.add_argument("--out", help="media folder (default $SPARKLIO_HOME or ~/.sparklio)")
    ui_p.add_argument("--media-port", type=int,
                      help="port of the media server the UI's previews load from (default 3001)")
    worker_p = sub.add_parser("worker", help="the GPU worker (ComfyUI)")
    worker_sub = worker_p.add_subparsers(dest="worker_command", required=True)
    check_p = worker_sub.add_parser("check", help="is the worker ready: version, VRAM, node classes and model "
                                                  "files the configured graphs need; exit 1 if anything is missing")
    check_p.add_argument("url", nargs="?", help="default: comfy.url in the config, or $SPARKLIO_COMFYUI_URL")
    for p in (gen, demo, remake, run_p, serve_p, ui_p, check_p):
        p.add_argument("--config", help="settings file (default $SPARKLIO_CONFIG or ./sparklio.yaml)")
    args = parser.parse_args(argv)
    if args.config:  # the definitions, the API and its workers read the same file through this
        os.environ["SPARKLIO_CONFIG"] = str(Path(args.config).resolve())

    try:
        if args.command == "worker":
            from .worker_check import check_worker

            return check_worker(args.url, args.config)
        if args.command == "demo":
            data = files("sparklio_assets") / "data"
            brief = Brief.model_validate_json(data.joinpath("demo_brief.json").read_text(encoding="utf-8"))
            brand = BrandKit.from_file(Path(str(data / "demo_kit" / "brand.json")))  # logo and packshot files
            return generate(JobSpec(brief=brief, brand=brand), args.out)
        if args.command == "generate":
            brief = _load(args.brief, Brief, "brief")
            brand = _load(args.brand, BrandKit, "brand") if args.brand else None
            try:
                spec = JobSpec(brief=brief, brand=brand, quality=args.quality, engine_preference=args.engine,
                               **({"job_id": args.job_id} if args.job_id else {}))
            except ValidationError as error:
                raise InputError(describe_validation_error(error, "job")) from None
            return generate(spec, args.out, args.allow_failed_checks)
        if args.command == "run-job":
            return run_existing_job(args.job_id, args.scene, args.out, _run_config(args.run_config))
        if args.command == "serve":
            return serve(args.host, args.port, args.out, args.log_level)
        if args.command == "ui":
            return ui(args.host, args.port, args.out, args.media_port)
        return remake_scene(args.job_id, args.scene_id, args.out)
    except InputError as error:
        return _fail(error, EXIT_BAD_INPUT)


def remake_scene(job_id: str, scene_id: str, out: str | None) -> int:
    from . import liveness
    from .pipeline import PipelineError, assemble
    from .pipeline import remake_scene as remake

    defs, instance, store = _session(out)
    try:
        if not store.job_dir(job_id).is_dir():
            raise InputError(_no_such_job(job_id, store, out))
        with liveness.hold(store.job_dir(job_id), job_id, "remake-scene", instance, store):
            remake(job_id, scene_id, defs, instance, store)
            record = assemble(job_id, defs, instance, store)
    except ValueError as error:
        raise InputError(str(error)) from None
    except (PipelineError, FileNotFoundError, liveness.JobBusy) as error:
        return _fail(error)
    _print(f"re-made {scene_id}; video: {record.video_path} ({record.duration:.2f} s)")
    from .segments import read_manifest

    if assembly := read_manifest(store.job_dir(job_id)):
        _print(assembly.summary())
    return 0


def _run_config(text: str) -> dict | None:
    if not text:
        return None
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"--run-config: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise InputError(f"--run-config: must be a JSON object, got {type(config).__name__}")
    return config


def run_existing_job(job_id: str, scene_id: str | None, out: str | None, run_config: dict | None = None) -> int:
    """The worker the API launches (`POST /video/generate`, `/video/regenerate/...`); also usable by
    hand. Every stage is a Dagster run tagged with the job id, which is how the API reports progress."""
    from api import worker

    from . import liveness, store_paths
    from .pipeline import PipelineError, StageReport, assemble, remake_scene, run_job

    if fd := os.environ.pop(worker.LOCK_FD_ENV, None):
        os.set_inheritable(int(fd), False)  # the job lock stays with this process, not its children
    defs, instance, store = _session(out)
    try:
        job_dir = store.job_dir(job_id)
    except ValueError as error:
        raise InputError(str(error)) from None
    if not store_paths.job_path(store, job_id).is_file():
        raise InputError(_no_such_job(job_id, store, out))

    def report(stage: StageReport) -> None:
        engines = ", ".join(f"{k} by {v}" for k, v in stage.engines.items())
        _print(f"  ✓ {stage.stage:<12} {stage.seconds:6.2f} s  {engines}  (run {stage.run_id})")

    try:
        with liveness.hold(job_dir, job_id, "run-job", instance, store, fd=int(fd) if fd else None), worker.worker_slot(
                store.folder, on_wait=lambda: _print("waiting for a free worker slot")):
            _print(f"job {job_id}: {'re-making ' + scene_id if scene_id else 'generating'} (pid {os.getpid()})")
            if scene_id:
                remake_scene(job_id, scene_id, defs, instance, store, report, run_config)
                record = assemble(job_id, defs, instance, store, report, run_config)
            else:
                record = run_job(job_id, defs, instance, store, report, run_config, reuse_storyboard=True)
    except (worker.WorkerBusy, liveness.JobBusy, PipelineError, FileNotFoundError, KeyError) as error:
        return _fail(error)
    _print(f"video: {record.video_path} ({record.duration:.2f} s)")
    return 0


def serve(host: str, port: int, out: str | None, log_level: str = "info") -> int:
    if out:
        os.environ["SPARKLIO_HOME"] = str(Path(out).resolve())
    import uvicorn

    from api.app import create_app

    uvicorn.run(create_app(), host=host, port=port, log_level=log_level)
    return 0


def ui(host: str, port: int, out: str | None, media_port: int | None) -> int:
    """The Dagster UI (`dagster dev`: webserver + daemon) on the same media folder and instance as
    the CLI and the API: one setting (--out, or $SPARKLIO_HOME) decides both homes. Beside it, the
    media server (api/media.py) that the previews inline in the UI's metadata are loaded from."""
    import signal
    import socket
    import subprocess
    import threading

    import uvicorn

    from api.media import create_media_app
    from resources.artifacts import MEDIA_PORT, MEDIA_URL_ENV, ArtifactStore

    from .pipeline import ensure_dagster_home

    if out:
        os.environ["SPARKLIO_HOME"] = str(Path(out).resolve())
    store = ArtifactStore()
    home = ensure_dagster_home(store.folder)
    media_port = media_port or MEDIA_PORT
    media_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    os.environ.setdefault(MEDIA_URL_ENV, f"http://{media_host}:{media_port}")  # what UI-launched runs link to
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:  # bound here, so a taken port stops `sparklio ui` with the reason instead of breaking every preview
        listener.bind((host, media_port))
    except OSError as error:
        raise InputError(f"--media-port: cannot serve media on {host}:{media_port} ({error.strerror}); "
                         "choose another port") from None
    media = uvicorn.Server(uvicorn.Config(create_media_app(store), log_level="warning"))
    threading.Thread(target=media.run, kwargs={"sockets": [listener]}, name="media", daemon=True).start()
    _print(f"media: {store.folder} (served at {os.environ[MEDIA_URL_ENV]})\ndagster: {home}\n"
           f"UI: http://{host}:{port}  (Ctrl-C stops it)")
    # A caught SIGINT is reset to the default in the child, an ignored one (a shell's background
    # job) would be inherited, and dagster dev maps SIGTERM to its SIGINT handler: it would not stop.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    dagster = subprocess.Popen([str(Path(sys.executable).with_name("dagster")), "dev", "-m",
                                "sparklio_assets.definitions", "-h", host, "-p", str(port)],
                               cwd=home)  # not the checkout: its dagster.yaml there would only draw a warning
    signal.signal(signal.SIGTERM, lambda *_: dagster.terminate())  # stopping `sparklio ui` stops dagster dev
    try:
        return dagster.wait()
    except KeyboardInterrupt:  # Ctrl-C reached dagster dev too (same process group): let it shut down
        return dagster.wait()
    finally:
        media.should_exit = True


if __name__ == "__main__":
    sys.exit(main())
