"""Bad input, hostile URLs and a full disk against the real app (in process): each answer is a 4xx
that names the field and the reason, or a JSON 507, never a 5xx or a plain-text page. Only one
storyboard is made (for the routes that need a job); no video is rendered."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.settings import Settings

BRIEF = {"brand_id": "b-1", "product": "Daily Eye Care Moisturizer", "target_audience": "20-30대 직장인",
         "goal": "제품 인지도 + 전환", "duration": 5, "tone": "professional_warm", "channels": ["instagram_reels"]}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def home(api_home):  # tests/conftest.py
    return api_home




@pytest.fixture(scope="module")
def job_id(client):
    made = client.post("/video/storyboard", json=BRIEF)
    assert made.status_code == 200, made.text
    return made.json()["storyboard_id"]


@pytest.mark.parametrize("query", ["expires=%C2%B2&sig=x", "expires=" + "9" * 5000 + "&sig=x",
                                   "expires=99999999999&sig=%C3%A9%E2%82%AC", "expires=-1&sig=", "sig=" + "a" * 64,
                                   "expires=99999999999&sig=" + "é" * 64, "expires=%00&sig=%00"])
def test_hostile_signed_urls_are_401_not_500(home, query):
    with TestClient(create_app(Settings.from_env(api_key="k3y")), raise_server_exceptions=False) as c:
        for path in ("/video/files/abcdef/ad.mp4", "/video/events/abcdef", "/video/status/abcdef"):
            response = c.get(f"{path}?{query}")
            assert response.status_code == 401, (path, query, response.text)
            assert "X-API-Key" in response.json()["detail"]


def field_error(response) -> tuple[str, str]:
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["detail"] and body["errors"], body
    return body["errors"][0]["field"], body["errors"][0]["reason"]


@pytest.mark.parametrize("change, field, words", [
    ({"product": "Eye\x00Care"}, "product", "control characters (found U+0000)"),
    ({"goal": "line\x1bbreak"}, "goal", "control characters (found U+001B)"),
    ({"product": "\u200b\u200d\ufeff"}, "product", "not only zero-width or BOM"),
    ({"target_audience": " \u2060 \u200c "}, "target_audience", "not only zero-width or BOM"),
    ({"duration": "15"}, "duration", "(a JSON number), not str"),
    ({"duration": True}, "duration", "(a JSON number), not bool"),
    ({"product": "  " + "x" * 119 + "  "}, "product", "at most 120 characters, surrounding whitespace included"),
    ({"brand": {"brand_id": "b", "name": "\ufeff", "colors": ["#112233"]}}, "brand.name", "zero-width"),
    ({"brand": {"brand_id": "b", "name": "B", "colors": ["#112233"], "cta_default": "a\x07"}}, "brand.cta_default",
     "control characters"),
    # A client cannot name files on the server: brand files come with a kit file to the CLI.
    ({"brand": {"brand_id": "b", "name": "B", "colors": ["#112233"], "logo": "/etc/passwd"}}, "brand",
     "logo: files are not taken in a JSON body"),
    # No packaged font draws emoji (and none installs from the registries): refused, saying why.
    ({"product": "수분크림 ✨"}, "product", "the ad's fonts cannot draw '✨' (U+2728): emoji"),
    ({"brand": {"brand_id": "b", "name": "B", "colors": ["#112233"], "cta_default": "지금 구매 👉"}},
     "brand.cta_default", "cannot draw '👉' (U+1F449)"),
])
def test_bad_fields_are_422_naming_the_field(client, change, field, words):
    got_field, reason = field_error(client.post("/video/storyboard", json={**BRIEF, **change}))
    assert got_field == field and words in reason, reason


def test_padding_is_stripped_and_korean_is_the_normal_case(client, job_id):
    plan = client.get(f"/video/status/{job_id}").json()
    assert plan["status"] == "storyboard_ready"


@pytest.mark.parametrize("body, words", [
    (b'{"product": "a", "product": "b"}', "duplicate JSON key 'product'"),
    ('{"product": "안녕"}'.encode("utf-16"), "not UTF-8"),
    (b'{"product": "\xed\xa0\x80"}', "not UTF-8"),
    (b'\xef\xbb\xbf{"product": "a"}', "byte-order mark"),
    (b"[" * 20_000 + b"]" * 20_000, "nested deeper than"),
    (b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "nested deeper than"),
    (b"{nope", "not valid JSON"),
])
def test_undecodable_bodies_are_422_saying_why(client, body, words):
    response = client.post("/video/storyboard", content=body, headers=JSON)
    field, reason = field_error(response)
    assert field == "(body)" and words in reason, reason


def test_a_scene_edit_is_checked_the_same_way(client, job_id):
    response = client.post(f"/video/regenerate/{job_id}/scenes/scene_001", json={"onscreen_text": "새\x00카피"})
    assert field_error(response) == ("onscreen_text", "must not contain control characters (found U+0000) "
                                                      "(got '새\\x00카피')")
    field, reason = field_error(client.post(f"/video/regenerate/{job_id}/scenes/scene_001",
                                            json={"onscreen_text": "새 카피 🔥"}))
    assert field == "onscreen_text" and "cannot draw '🔥' (U+1F525)" in reason, reason


def test_the_schema_asks_for_the_key_only_when_the_server_has_one(home):
    with TestClient(create_app()) as c:
        open_schema = c.get("/openapi.json").json()
    assert "securitySchemes" not in open_schema.get("components", {})
    assert not any("security" in op for ops in open_schema["paths"].values() for op in ops.values())
    with TestClient(create_app(Settings.from_env(api_key="k3y"))) as c:
        keyed = c.get("/openapi.json").json()
    assert keyed["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    video_ops = [op for path, ops in keyed["paths"].items() if path.startswith("/video") for op in ops.values()]
    assert video_ops and all(op.get("security") == [{"APIKeyHeader": []}] for op in video_ops)
    assert all("401" in op["responses"] for op in video_ops)
    assert "security" not in keyed["paths"]["/health"]["get"]


def test_schema_string_limits_agree_with_stripping(home):
    with TestClient(create_app()) as c:
        schema = c.get("/openapi.json").json()["components"]["schemas"]
    product = schema["StoryboardRequest"]["properties"]["product"]
    import re
    pattern = re.compile(product["pattern"])
    assert product["maxLength"] == 120
    assert pattern.search("  Eye Care  ") and not pattern.search("\u200b\ufeff") and not pattern.search("a\x00b")
    assert not pattern.search("   ")


def test_413_carries_cors_headers(home):
    origin = "https://studio.example"
    with TestClient(create_app(Settings.from_env(cors_origins=(origin,))), raise_server_exceptions=False) as c:
        response = c.post("/video/storyboard", content=b"x" * 70_000, headers={**JSON, "Origin": origin})
        assert response.status_code == 413
        assert response.headers["access-control-allow-origin"] == origin
        bad = c.post("/video/storyboard", content=b'{"a": 1, "a": 2}', headers={**JSON, "Origin": origin})
        assert bad.status_code == 422 and bad.headers["access-control-allow-origin"] == origin


def test_health_hides_internal_urls_without_the_key(home, monkeypatch):
    monkeypatch.setenv("SPARKLIO_COMFYUI_URL", "http://10.1.2.3:8188")
    with TestClient(create_app(Settings.from_env(api_key="k3y"))) as c:
        anonymous = c.get("/health")
        keyed = c.get("/health", headers={"X-API-Key": "k3y"})
    assert anonymous.status_code == 200 and "10.1.2.3" not in anonymous.text
    assert {e["name"]: e["available"] for e in anonymous.json()["engines"]}["comfyui"] is True
    assert "http://10.1.2.3:8188" in keyed.text


def test_the_queue_and_the_event_streams_are_capped(home, job_id):
    with TestClient(create_app(Settings.from_env(max_queued=0, max_streams=0)), raise_server_exceptions=False) as c:
        queued = c.post("/video/generate", json={"storyboard_id": job_id})
        assert queued.status_code == 429 and int(queued.headers["retry-after"]) > 0
        assert "waiting for a worker" in queued.json()["detail"]
        stream = c.get(f"/video/events/{job_id}")
        assert stream.status_code == 429 and int(stream.headers["retry-after"]) > 0
        assert c.get(f"/video/status/{job_id}").json()["status"] == "storyboard_ready"  # nothing was started


def test_an_os_error_is_json_from_any_route(client, job_id, monkeypatch):
    from api import jobs

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs, "load", full)
    response = client.get(f"/video/status/{job_id}")
    assert response.status_code == 507 and "disk is full" in response.json()["detail"]
    monkeypatch.setattr(jobs, "load", lambda *a, **k: 1 / 0)
    bug = client.get(f"/video/result/{job_id}")
    assert bug.status_code == 500 and bug.json() == {"detail": "internal error (ZeroDivisionError); see the server log"}


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs as the media folder (Dagster's instance stays elsewhere); skipped where the
    machine does not allow mounting one."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'mount failed'}); "
                    "the full-disk test needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_full_disk_is_507_and_leaves_no_empty_job_folder(home, small_disk, monkeypatch):
    monkeypatch.setenv("SPARKLIO_HOME", str(small_disk))
    settings = Settings.from_env(home=str(small_disk))
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        made = c.post("/video/storyboard", json=BRIEF)
        assert made.status_code == 200, made.text
        job_id = made.json()["storyboard_id"]
        fill(small_disk)
        full = c.post("/video/storyboard", json=BRIEF)
        assert full.status_code == 507, full.text
        assert full.headers["content-type"] == "application/json" and "disk is full" in full.json()["detail"]
        assert sorted(p.name for p in (small_disk / "jobs").iterdir()) == [job_id], "no empty job folder"
        generate = c.post("/video/generate", json={"storyboard_id": job_id})
        assert generate.status_code == 507, generate.text
        assert c.get(f"/video/status/{job_id}").json()["status"] == "storyboard_ready"
        os.unlink(small_disk / "filler")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_queued_job_waits_in_a_small_process_then_becomes_the_worker(tmp_path, monkeypatch):
    """With every slot taken, the launched process only waits (stdlib, no Dagster loaded); when a
    slot frees it becomes the worker and hands it the slot's lock."""
    import fcntl
    import sys
    import time

    from api import worker

    monkeypatch.setenv(worker.MAX_WORKERS_ENV, "1")
    locks = []
    for job in ("running", "queued"):  # the job locks, as the API's launch holds them for the workers
        (tmp_path / "jobs" / job / "worker").mkdir(parents=True)
        locks.append(os.open(tmp_path / "jobs" / job / "worker" / "run.lock", os.O_RDWR | os.O_CREAT))
        fcntl.flock(locks[-1], fcntl.LOCK_EX)
    held = worker.wait_for_slot(tmp_path)  # the running job's slot
    out = tmp_path / "out.txt"
    env = {**os.environ, worker.MAX_WORKERS_ENV: "1"}
    script = f"import os; open({str(out)!r}, 'w').write(os.environ['{worker.SLOT_FD_ENV}'])"
    waiter = subprocess.Popen([sys.executable, "-m", "api.worker", str(tmp_path), sys.executable, "-c", script],
                              env=env, pass_fds=(locks[1],))
    try:
        time.sleep(3.0)
        assert waiter.poll() is None and not out.exists(), "it waits while the slot is taken"
        assert rss_kib(waiter.pid) < 40_000, f"a waiting job is small: {rss_kib(waiter.pid)} KiB"
        assert worker.waiting_count(tmp_path) == 1 and worker.busy_slots(tmp_path) == 1
        os.close(held)
        assert waiter.wait(60) == 0
        assert out.read_text().isdigit(), "the worker got the slot's fd"
    finally:
        waiter.kill()
        for fd in locks:
            os.close(fd)
