"""The REST API end to end: the real app (TestClient, and `sparklio serve` as a process) against a
real Dagster instance and artifact store in temp folders, with real detached workers."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import unicodedata
from pathlib import Path

import httpx
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from fastapi.testclient import TestClient

from api import worker
from api.app import create_app
from api.settings import Settings
from local_servers import free_port, wait_until_up

BRIEF = {
    "brand_id": "2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10",
    "product": "Daily Eye Care Moisturizer",
    "target_audience": "20-30대 직장인",
    "goal": "제품 인지도 + 전환",
    "duration": 5,
    "tone": "professional_warm",
    "channels": ["instagram_reels", "youtube_shorts"],
}
TERMINAL = ("completed", "failed", "canceled")


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    home = tmp_path_factory.mktemp("api_home")
    patch = pytest.MonkeyPatch()
    patch.setenv("SPARKLIO_HOME", str(home))
    patch.setenv("DAGSTER_HOME", str(home / "dagster"))
    for name in ("SPARKLIO_API_KEY", "SPARKLIO_CORS_ORIGINS", "SPARKLIO_PUBLIC_URL", "SPARKLIO_MAX_BODY_BYTES"):
        patch.delenv(name, raising=False)
    yield home
    # No worker of this module may outlive it.
    for lock in (home / "jobs").glob("*/worker/worker.json"):
        record = worker.read_record(lock.parent.parent)
        if record and record.pid and worker.is_running(lock.parent.parent):
            os.killpg(record.pid, signal.SIGKILL)
    patch.undo()


@pytest.fixture(scope="module")
def client(home):
    with TestClient(create_app()) as c:
        yield c


def wait_for(client: TestClient, job_id: str, until, timeout: float = 150.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/video/status/{job_id}").json()
        if until(status):
            return status
        assert time.monotonic() < deadline, f"timed out waiting; last status {status}"
        time.sleep(0.3)


def sse_events(response) -> list[dict]:
    events, current = [], {}
    for line in response.iter_lines():
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            current[key] = value.removeprefix(" ")
    return events


def live_processes_in_group(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (an orphan's zombie waits for init to reap it)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(stat.parent.name))
    return live


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def finished(client, home):
    """brief → storyboard → generate (a real detached worker) → the event stream until completed."""
    started = time.monotonic()
    made = client.post("/video/storyboard", json=BRIEF)
    assert made.status_code == 200, made.text
    board = made.json()
    job_id = board["storyboard_id"]
    before = client.get(f"/video/status/{job_id}").json()
    queued = client.post("/video/generate", json={"storyboard_id": job_id, "engine_preference": "local",
                                                  "quality": "draft"})
    assert queued.status_code == 202, queued.text
    with client.stream("GET", f"/video/events/{job_id}", params={"interval": 0.3}) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        events = sse_events(stream)
    return {"job_id": job_id, "board": board, "before": before, "queued": queued.json(), "events": events,
            "seconds": time.monotonic() - started, "job_dir": home / "jobs" / job_id}


def test_health(client):
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["auth"] == "none"
    assert body["instance"]["reachable"] and body["instance"]["run_storage"].startswith("Sqlite")
    assert {(e["stage"], e["name"]) for e in body["engines"] if e["available"]} >= {
        ("storyboard", "builtin"), ("image", "builtin"), ("motion", "kenburns"), ("music", "builtin synth"),
        ("assembly", "ffmpeg")}
    offline = {e["name"]: e for e in body["engines"] if not e["available"]}
    assert "SPARKLIO_COMFYUI_URL not set" in offline["comfyui"]["detail"]
    assert offline["animatediff"]["detail"] == offline["comfyui"]["detail"]
    llms = [e for e in body["engines"] if e["stage"] == "storyboard" and not e["available"]]
    assert llms and all(e["detail"] == "SPARKLIO_LLM=off" for e in llms)
    narration = next(e for e in body["engines"] if e["stage"] == "narration")
    assert not narration["available"] and narration["detail"] == "SPARKLIO_TTS=off: ads get music only"


def test_storyboard_response_follows_the_spec(finished):
    board = finished["board"]
    assert set(board) >= {"storyboard_id", "storyboard", "estimated_cost", "estimated_time"}
    plan = board["storyboard"]
    assert plan["duration_seconds"] == 5 and plan["format"] == "9:16"
    assert [s["id"] for s in plan["scenes"]] == [f"scene_{i:03d}" for i in range(1, len(plan["scenes"]) + 1)]
    assert board["estimated_cost"] == 0.0 and 5 <= board["estimated_time"] <= 300
    assert finished["before"]["status"] == "storyboard_ready"
    assert finished["before"]["scenes_total"] == len(plan["scenes"])


def test_generate_queues_and_the_event_stream_ends_completed(finished):
    queued = finished["queued"]
    assert queued["job_id"] == finished["job_id"] and queued["status"] == "queued"
    assert queued["estimated_completion"].endswith("Z")
    events = finished["events"]
    assert all(e["event"] == "status" for e in events)
    snapshots = [json.loads(e["data"]) for e in events]
    assert snapshots[-1]["status"] == "completed" and snapshots[-1]["progress"] == 1.0
    assert len(snapshots) >= 3, snapshots
    assert "processing" in {s["status"] for s in snapshots}
    progress = [s["progress"] for s in snapshots]
    assert progress == sorted(progress), progress
    steps = {s["current_step"] for s in snapshots}
    assert {"generating_key_images", "assembling_video"} & steps, steps
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))


def test_status_and_result_of_the_finished_job(client, finished):
    job_id = finished["job_id"]
    status = client.get(f"/video/status/{job_id}").json()
    scenes = len(finished["board"]["storyboard"]["scenes"])
    assert status | {"updated_at": None, "runs": None} == {
        "job_id": job_id, "status": "completed", "progress": 1.0, "current_step": "completed",
        "scenes_completed": scenes, "scenes_total": scenes, "eta_seconds": 0, "kind": "generate",
        "current_scene": None, "detail": None, "error": None, "updated_at": None, "runs": None}
    result = client.get(f"/video/result/{job_id}")
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["status"] == "completed"
    assert body["video_url"].endswith(f"/video/files/{job_id}/ad.mp4")
    assert body["thumbnail_url"].endswith(f"/video/files/{job_id}/thumbnail.jpg")
    meta = body["metadata"]
    assert abs(meta["duration"] - 5.0) <= 1 / 24 and meta["resolution"] == "1080x1920"
    assert meta["scenes_count"] == scenes and meta["total_cost"] == 0.0
    assert 0 < meta["generation_time"] < finished["seconds"] + 1
    assert meta["engines"]["assembly"].startswith("ffmpeg")
    audio = meta["audio"]
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("aac", 48000, 2)
    assert abs(audio["loudness_lufs"] + 14) < 0.5 and audio["music"].startswith("builtin synth")
    assert audio["narration"] == "none (SPARKLIO_TTS=off)" and audio["cost_usd"] == 0.0
    checks = meta["checks"]  # spec 7, run by Dagster as final_video's asset checks
    assert checks["passed"] and len(checks["checks"]) == 9, checks
    job = json.loads((finished["job_dir"] / "job.json").read_text())
    assert (job["quality"], job["engine_preference"]) == ("draft", "local")


STEP_ORDER = ["queued", "planning_storyboard", "generating_key_images", "mixing_soundtrack", "assembling_video",
              "checking_quality", "finishing", "completed"]


def test_steps_run_in_order_and_progress_reaches_one_only_when_done(finished):
    snapshots = [json.loads(e["data"]) for e in finished["events"]]
    rank = {step: i for i, step in enumerate(STEP_ORDER)} | {"generating_motion_clips": 2}
    steps = [s["current_step"] for s in snapshots]
    ranks = [rank[step] for step in steps]
    assert ranks == sorted(ranks), steps  # never assembling_video → mixing_soundtrack → assembling_video
    assert all(s["progress"] < 1.0 for s in snapshots if s["status"] != "completed"), snapshots
    assert snapshots[-1]["progress"] == 1.0


def test_the_result_gives_urls_and_every_served_file_has_one_mode(client, finished):
    job_id, job_dir = finished["job_id"], finished["job_dir"]
    body = client.get(f"/video/result/{job_id}").json()
    assert str(job_dir.parent.parent) not in json.dumps(body), "no server path in the result"
    urls = [body["video_url"], body["thumbnail_url"], *body["metadata"]["renditions"].values()]
    assert all(u.startswith("http://") for u in urls), urls
    files = [p for p in job_dir.rglob("*") if p.is_file() and "worker" not in p.parts and not p.name.startswith(".")]
    modes = {p.relative_to(job_dir).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o644"}, modes
    assert {"final/ad.mp4", "final/thumbnail.jpg", "final/checks.json", "final/video.json"} <= set(modes), modes


def test_every_stage_is_a_dagster_run_tagged_with_the_job(home, finished):
    with DagsterInstance.get() as instance:
        runs = instance.get_runs(RunsFilter(tags={"sparklio/job_id": finished["job_id"]}))
    scenes = len(finished["board"]["storyboard"]["scenes"])
    assert sorted(r.job_name for r in runs) == sorted(["storyboard_job", "final_video_job"] + ["scene_job"] * scenes)
    assert all(r.status == DagsterRunStatus.SUCCESS for r in runs)


def test_range_download_of_the_mp4(client, finished):
    job_id = finished["job_id"]
    video = finished["job_dir"] / "final" / "ad.mp4"
    data = video.read_bytes()
    url = client.get(f"/video/result/{job_id}").json()["video_url"]
    part = client.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206
    assert part.headers["accept-ranges"] == "bytes"
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.content == data[100:1100]
    tail = client.get(url, headers={"Range": "bytes=-16"})
    assert tail.status_code == 206 and tail.content == data[-16:]
    whole = client.get(url)
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4"
    assert hashlib.sha256(whole.content).hexdigest() == hashlib.sha256(data).hexdigest()
    assert whole.content[4:8] == b"ftyp"
    assert client.get(url, headers={"Range": f"bytes={len(data) + 10}-"}).status_code == 416
    thumb = client.get(f"/video/files/{job_id}/thumbnail.jpg")
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    assert client.head(url).headers["content-length"] == str(len(data))


def test_a_restarted_api_still_knows_the_job(home, finished):
    with TestClient(create_app()) as fresh:
        status = fresh.get(f"/video/status/{finished['job_id']}").json()
        assert status["status"] == "completed" and status["progress"] == 1.0
        assert fresh.get(f"/video/result/{finished['job_id']}").status_code == 200
        with fresh.stream("GET", f"/video/events/{finished['job_id']}") as stream:
            events = sse_events(stream)
        assert [json.loads(e["data"])["status"] for e in events] == ["completed"]


def test_input_errors_name_the_field(client, finished):
    bad = client.post("/video/storyboard", json={**BRIEF, "duration": 90})
    assert bad.status_code == 422
    body = bad.json()
    assert body["errors"][0]["field"] == "duration" and "60" in body["errors"][0]["reason"]
    assert body["detail"].startswith("duration: ") and "(got 90)" in body["detail"]

    missing = client.post("/video/storyboard", json={k: v for k, v in BRIEF.items() if k != "product"}).json()
    assert missing["errors"] == [{"field": "product", "location": "body", "reason": "Field required"}]
    tone = client.post("/video/storyboard", json={**BRIEF, "tone": "Warm & Fuzzy"}).json()
    assert tone["errors"][0]["field"] == "tone" and "snake_case" in tone["errors"][0]["reason"]
    extra = client.post("/video/storyboard", json={**BRIEF, "budget": 3}).json()
    assert extra["errors"][0]["field"] == "budget"
    brand = client.post("/video/storyboard", json={**BRIEF, "brand": {"brand_id": "b", "name": "B",
                                                                      "colors": ["red"]}}).json()
    assert brand["errors"][0]["field"].startswith("brand.colors") and "hex" in brand["errors"][0]["reason"]
    not_json = client.post("/video/storyboard", content=b"{nope", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]
    quality = client.post("/video/generate", json={"storyboard_id": "abc123", "quality": "ultra"})
    assert quality.status_code == 422 and quality.json()["errors"][0]["field"] == "quality"
    interval = client.get(f"/video/events/{finished['job_id']}", params={"interval": 0})
    assert interval.status_code == 422 and interval.json()["errors"][0] == {
        "field": "interval", "location": "query", "reason": "Input should be greater than or equal to 0.2 (got '0')"}


def test_unknown_ids_are_404(client, finished):
    for method, path in [("GET", "/video/status/nosuchjob"), ("GET", "/video/result/nosuchjob"),
                         ("GET", "/video/files/nosuchjob/ad.mp4"), ("GET", "/video/events/nosuchjob"),
                         ("POST", "/video/cancel/nosuchjob"), ("POST", "/video/regenerate/nosuchjob/scenes/scene_001"),
                         ("GET", "/video/status/NOT a job!"),
                         ("POST", f"/video/regenerate/{finished['job_id']}/scenes/scene_009")]:
        response = client.request(method, path)
        assert response.status_code == 404, (path, response.text)
        assert "detail" in response.json()
    generate = client.post("/video/generate", json={"storyboard_id": "nosuchjob"})
    assert generate.status_code == 404 and "nosuchjob" in generate.json()["detail"]


def test_request_body_limit(client):
    huge = {**BRIEF, "product": "x" * 70_000}
    response = client.post("/video/storyboard", json=huge)
    assert response.status_code == 413
    assert response.json()["detail"].endswith("the limit is 65536")

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(70):
            yield b"x" * 1024

    chunked = client.post("/video/storyboard", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "limit is 65536" in chunked.json()["detail"]


@pytest.mark.parametrize("path", [
    "/video/files/{job}/job.json", "/video/files/{job}/..%2Fjob.json", "/video/files/{job}/%2e%2e%2fjob.json",
    "/video/files/..%2F..%2Fjobs%2F{job}/ad.mp4", "/video/files/%2e%2e/ad.mp4", "/video/files/{job}/..",
    "/video/files/{job}/final%2Fad.mp4", "/video/files/{job}/%2Fetc%2Fpasswd",
])
def test_downloads_cannot_escape_the_media_folder(client, finished, path):
    response = client.get(path.format(job=finished["job_id"]))
    assert response.status_code == 404, response.text
    assert b"brand_id" not in response.content and b"root:" not in response.content


def test_api_key_and_signed_urls(home, finished):
    job_id = finished["job_id"]
    with TestClient(create_app(Settings.from_env(api_key="s3cret", cors_origins=("https://studio.example",)))) as c:
        assert c.get("/health").status_code == 200  # load balancers need no key
        assert c.get(f"/video/status/{job_id}").status_code == 401
        assert c.get(f"/video/status/{job_id}", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.post("/video/storyboard", json=BRIEF).status_code == 401
        ok = c.get(f"/video/result/{job_id}", headers={"X-API-Key": "s3cret"})
        assert ok.status_code == 200
        video_url = ok.json()["video_url"]
        assert "sig=" in video_url and "expires=" in video_url
        # A <video> tag sends no header: the signed URL alone is enough, for that file only.
        assert c.get(video_url, headers={"Range": "bytes=0-9"}).status_code == 206
        assert c.get(video_url.replace("ad.mp4", "thumbnail.jpg")).status_code == 401
        assert c.get(video_url.replace("sig=", "sig=0")).status_code == 401
        cors = c.options(f"/video/status/{job_id}", headers={
            "Origin": "https://studio.example", "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "X-API-Key"})
        assert cors.headers["access-control-allow-origin"] == "https://studio.example"
        other = c.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_a_failed_job_says_which_stage_failed_and_why(client, home):
    job_id = client.post("/video/storyboard", json=BRIEF).json()["storyboard_id"]
    job_dir = home / "jobs" / job_id
    # The API's own launch path, asked for a scene the storyboard does not have.
    worker.launch(job_dir, "regenerate", [job_id, "--scene", "scene_009"],
                  {**os.environ, "SPARKLIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")},
                  scene_id="scene_009")
    status = wait_for(client, job_id, lambda s: s["status"] in TERMINAL, timeout=90)
    assert status["status"] == "failed", status
    # Refused before any run: the scene has no partition key to run under (partitions.py).
    assert status["error"]["stage"] == "scene_009" and status["error"]["step"] is None
    assert re.search(rf"job {job_id} has \d scenes; scene_009 does not exist", status["error"]["reason"])
    result = client.get(f"/video/result/{job_id}")
    assert result.status_code == 409 and result.json()["status"] == "failed"
    assert "scene_009 does not exist" in result.json()["detail"]


def test_generate_makes_the_storyboard_a_killed_server_never_finished(client, home):
    """The server died inside POST /video/storyboard: the job exists, its storyboard does not.
    Generate resumes it (storyboard first, then the video) instead of refusing."""
    from resources.artifacts import ArtifactStore
    from sparklio_assets.jobs import create_job, named
    from sparklio_assets.models import Brief, JobSpec

    brief = Brief.model_validate(BRIEF)
    with DagsterInstance.get() as instance:
        spec = create_job(named(JobSpec(brief=brief, quality="draft")), instance, ArtifactStore())
    job_dir = home / "jobs" / spec.job_id
    assert not (job_dir / "storyboard.json").exists()
    assert client.get(f"/video/status/{spec.job_id}").status_code == 200
    queued = client.post("/video/generate", json={"storyboard_id": spec.job_id, "quality": "draft"})
    assert queued.status_code == 202, queued.text
    status = wait_for(client, spec.job_id, lambda s: s["status"] in TERMINAL, timeout=600)
    assert status["status"] == "completed", status
    assert [r["stage"] for r in status["runs"]][0] == "storyboard"
    assert (job_dir / "storyboard.json").is_file() and (job_dir / "final" / "ad.mp4").is_file()


def test_regenerate_then_cancel_keeps_the_existing_video(client, finished):
    job_id, job_dir = finished["job_id"], finished["job_dir"]
    video = job_dir / "final" / "ad.mp4"
    digest = sha(video)
    busy = client.post(f"/video/regenerate/{job_id}/scenes/scene_002", json={"onscreen_text": "x" * 41})
    assert busy.status_code == 422 and busy.json()["errors"][0]["field"] == "onscreen_text"
    started = client.post(f"/video/regenerate/{job_id}/scenes/scene_002", json={"onscreen_text": "새 카피"})
    assert started.status_code == 202, started.text
    plan = json.loads((job_dir / "storyboard.json").read_text())
    assert plan["scenes"][1]["onscreen_text"] == "새 카피"
    again = client.post(f"/video/regenerate/{job_id}/scenes/scene_001")
    assert again.status_code == 409
    # Cancel in the middle of the re-assembly: the old video must survive it.
    wait_for(client, job_id, lambda s: any(r["stage"] == "final_video" and r["status"] == "STARTED"
                                           for r in s["runs"]) or s["status"] in TERMINAL, timeout=90)
    canceled = client.post(f"/video/cancel/{job_id}")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    assert not worker.is_running(job_dir)
    assert client.post(f"/video/cancel/{job_id}").json()["status"] == "canceled"  # idempotent
    with DagsterInstance.get() as instance:
        statuses = {r.status for r in instance.get_runs(RunsFilter(tags={"sparklio/job_id": job_id}))}
    assert statuses <= {DagsterRunStatus.SUCCESS, DagsterRunStatus.CANCELED}
    assert DagsterRunStatus.CANCELED in statuses
    assert sha(video) == digest, "cancel kept the video the job already had"
    assert not list(job_dir.rglob(".*.part*"))
    result = client.get(f"/video/result/{job_id}")
    assert result.status_code == 409 and result.json()["status"] == "canceled"
    assert result.json()["video_url"].split("?")[0].endswith(f"/video/files/{job_id}/ad.mp4")


def test_serve_worker_outlives_the_api_and_cancel_kills_it(home):
    """`sparklio serve` as its own process: generate, kill the server, the worker keeps going; a new
    API process sees it and cancels it."""
    port = free_port()
    env = {**os.environ, "SPARKLIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    server = subprocess.Popen([sys.executable, "-m", "sparklio_assets.cli", "serve", "--port", str(port),
                               "--log-level", "warning"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{base}/health", 60, "sparklio serve", proc=server)
        job_id = httpx.post(f"{base}/video/storyboard", json=BRIEF, timeout=60).json()["storyboard_id"]
        assert httpx.post(f"{base}/video/generate", json={"storyboard_id": job_id}, timeout=30).status_code == 202
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)
    job_dir = home / "jobs" / job_id
    assert worker.is_running(job_dir), "the worker survives the API"
    pid = worker.read_record(job_dir).pid
    with TestClient(create_app()) as fresh:
        status = wait_for(fresh, job_id, lambda s: s["status"] in ("processing", *TERMINAL), timeout=60)
        assert status["status"] == "processing", status
        assert fresh.post("/video/generate", json={"storyboard_id": job_id}).status_code == 409
        canceled = fresh.post(f"/video/cancel/{job_id}").json()
        assert canceled["status"] == "canceled" and canceled["current_step"] == "canceled"
        assert not worker.is_running(job_dir)
        assert not live_processes_in_group(pid), "worker, ffmpeg and log tailers are all gone"
        assert fresh.post(f"/video/cancel/{job_id}").status_code == 200
        assert fresh.get(f"/video/status/{job_id}").json()["status"] == "canceled"


# --- fuzz: every operation of the OpenAPI schema, in-process (ASGI), a few examples each ---
# (schemathesis' pytest plugin, `from_fixture`, does not run under pytest 9: Hypothesis drives it here.)

import schemathesis  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.generation.modes import GenerationMode  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from api.schemas import ONSCREEN_FORMAT  # noqa: E402
from sparklio_assets.typography import cmap, font_path, latin_font_path  # noqa: E402

FUZZ_EXAMPLES = 10
# A valid brand upload is a kit whose logo and packshots are real images it names: no schema can say
# that, so schema-valid uploads may be refused (422, naming why); every other check still runs.
EXCLUDED = {"POST /brands": [positive_data_acceptance]}

# The schema's on-screen text format: any character the packaged fonts draw (Hangul, accented
# Latin, symbols, quotes, backslashes), none that is a control or surrogate.
DRAWABLE = sorted(chr(c) for c in cmap(str(font_path())) | cmap(str(latin_font_path()))
                  if unicodedata.category(chr(c)) not in ("Cc", "Cs", "Zl", "Zp"))
schemathesis.openapi.format(ONSCREEN_FORMAT, st.text(st.sampled_from(DRAWABLE), min_size=1, max_size=30)
                            .filter(lambda s: s.strip()))


def test_fuzz_the_openapi_schema(home, finished):
    """All of schemathesis' checks (no 5xx, responses match the schema, bad input rejected, the
    key enforced), schema-valid and schema-breaking data, against a keyed server."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(Settings.from_env(api_key="fuzz-key")))
    failures, ran, codes = [], [], {}
    for result in schema.get_all_operations():
        operation = result.ok()
        passes = [(GenerationMode.POSITIVE, {}), (GenerationMode.NEGATIVE, {})]
        if operation.method.upper() == "GET" and "{job_id}" in operation.path:  # and a real, finished job
            passes.append((GenerationMode.POSITIVE, {"job_id": finished["job_id"]}))
        for mode, fixed in passes:
            @given(case=operation.as_strategy(generation_mode=mode, path_parameters=fixed or None))
            @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck), print_blob=False)
            def fuzz(case):  # called right below, inside this iteration (hypothesis allows no defaults)
                response = case.call_and_validate(headers={"X-API-Key": "fuzz-key"},
                                                  excluded_checks=EXCLUDED.get(case.operation.label))
                codes.setdefault(operation.label, set()).add(response.status_code)  # noqa: B023

            if mode == GenerationMode.NEGATIVE and not (operation.path_parameters or operation.query
                                                          or operation.body):
                continue  # nothing to break
            try:
                fuzz()
            except (Exception, BaseExceptionGroup) as error:  # collect every operation's problem, then report them all
                failures.append(f"{operation.label} [{mode.value}{' real job' if fixed else ''}]: "
                                f"{type(error).__name__}: {str(error)[:1500]}")
            ran.append(f"{operation.label} [{mode.value}{' real job' if fixed else ''}]")
    assert not failures, "\n\n".join(failures)
    assert len(ran) >= 16, ran
    assert 200 in codes["POST /video/storyboard"] and 422 in codes["POST /video/storyboard"], codes
    assert 200 in codes["GET /video/status/{job_id}"] and 200 in codes["GET /video/events/{job_id}"], codes
    print({label: sorted(c) for label, c in codes.items()})
