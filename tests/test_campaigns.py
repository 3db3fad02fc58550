"""Bulk campaigns: the campaign sensor against a real instance (no daemon), and the chaining sensor
carrying a sensor-made job from storyboard to finished video, with this test playing the daemon."""

import json
import logging
import os
import time
from datetime import UTC
from pathlib import Path

import pytest
from dagster import (
    AddDynamicPartitionsRequest,
    Definitions,
    RunRequest,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from resources.artifacts import ArtifactStore
from resources.ffmpeg import FFmpegRunner
from sensors.campaigns import CHAIN_TAG, collect, read_campaign_file
from sensors.chain import CHAIN_ID_TAG, next_run_requests
from sparklio_assets import store_paths as layout
from sparklio_assets.definitions import defs
from sparklio_assets.jobs import JOB_TAG
from sparklio_assets.models import JobSpec
from sparklio_assets.video_probe import probe

DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
BRIEF = json.loads((DATA / "demo_brief.json").read_text())
BRAND = json.loads((DATA / "demo_brand.json").read_text())
HEADER = "brand_id,product,target_audience,goal,duration,tone,channels,brand_colors,logo_text\n"


class Captured(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def settled(*paths: Path) -> None:
    """Campaign files younger than 2 s are left for the next tick (may be half-copied): age them."""
    old = time.time() - 60
    for path in paths:
        os.utime(path, (old, old))


@pytest.fixture
def env(tmp_path, monkeypatch):
    home = tmp_path / "home"
    campaigns = home / "campaigns"
    campaigns.mkdir(parents=True)
    monkeypatch.setenv("SPARKLIO_CAMPAIGNS_DIR", str(campaigns))
    (tmp_path / "dagster").mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        yield instance, ArtifactStore(home=str(home)), campaigns


def evaluate(instance, store, cursor=None):
    sensor = defs.resolve_sensor_def("campaign_sensor")
    log = Captured()
    with build_sensor_context(instance=instance, cursor=cursor, resources={"store": store},
                              definitions=defs) as context:
        context.log.addHandler(log)
        result = sensor(context)
    assert isinstance(result, SensorResult)
    return result, log.lines


def apply_partitions(instance, result: SensorResult) -> None:
    """What the daemon does with the sensor's dynamic partition requests."""
    for request in result.dynamic_partitions_requests or []:
        assert isinstance(request, AddDynamicPartitionsRequest)
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def drop_campaign(campaigns: Path) -> None:
    (campaigns / "spring.json").write_text(json.dumps({"brief": {**BRIEF, "duration": 5}, "brand": BRAND},
                                                      ensure_ascii=False))
    (campaigns / "retail.csv").write_text(
        HEADER
        + 'acme,Acme Cold Brew,busy commuters,awareness,12,energetic_fun,tiktok;youtube_shorts,"#F4F1EC;#1F3A5F",ACME\n'
        + "acme,Acme Tea,students,awareness,90,calm,tiktok,,\n")
    (campaigns / "notes.txt").write_text("not a campaign file")
    settled(*campaigns.iterdir())


def test_two_good_briefs_become_two_jobs_exactly_once_and_the_bad_row_is_logged(env):
    instance, store, campaigns = env
    drop_campaign(campaigns)

    first, log = evaluate(instance, store)
    requests = first.run_requests
    assert len(requests) == 2 and all(isinstance(r, RunRequest) for r in requests)
    job_ids = sorted(r.partition_key for r in requests)
    assert [r.job_name for r in requests] == ["storyboard_job", "storyboard_job"]
    assert sorted(first.dynamic_partitions_requests[0].partition_keys) == job_ids
    assert {r.run_key for r in requests} == {f"campaign:{j}" for j in job_ids}
    assert all(r.tags[CHAIN_TAG] == "auto" and r.tags[JOB_TAG] == r.partition_key for r in requests)
    specs = {j: layout.read_job(store, j) for j in job_ids}  # the requests are on disk for the assets
    assert {s.brief.product for s in specs.values()} == {"Daily Eye Care Moisturizer", "Acme Cold Brew"}
    acme = next(s for s in specs.values() if s.brief.product == "Acme Cold Brew")
    assert acme.brief.channels == ["tiktok", "youtube_shorts"] and acme.brand_kit.colors == ["#F4F1EC", "#1F3A5F"]
    bad = [line for line in log if line.startswith("bad row skipped")]
    assert len(bad) == 1, log
    assert "retail.csv row 3: brief.duration:" in bad[0] and "60" in bad[0] and "'90'" in bad[0]

    apply_partitions(instance, first)
    again, log = evaluate(instance, store, cursor=first.cursor)
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert not any(line.startswith("bad row") for line in log), "unchanged files are not read (or re-reported)"

    lost, log = evaluate(instance, store, cursor=None)  # cursor lost: the job ids still say 'done'
    assert not lost.run_requests
    assert sum(line.startswith("bad row skipped") for line in log) == 1
    assert sum("exists already" in line for line in log) == 2

    with (campaigns / "retail.csv").open("a") as f:  # a new row in a known file: only it is new
        f.write('acme,Acme Lemonade,families,conversion,15,playful_bright,instagram_reels,"#FFF3B0;#E4572E",ACME\n')
    settled(campaigns / "retail.csv")
    more, _ = evaluate(instance, store, cursor=again.cursor)
    assert [layout.read_job(store, r.partition_key).brief.product for r in more.run_requests] == ["Acme Lemonade"]


def test_job_ids_are_deterministic_and_name_file_and_row(tmp_path):
    path = tmp_path / "launch.jsonl"
    path.write_text("\n".join([json.dumps(BRIEF), "{not json", json.dumps({**BRIEF, "tone": "Warm!"}),
                               json.dumps({"brief": BRIEF, "quality": "premium"})]) + "\n")
    rows = read_campaign_file(path, path.name)
    assert [r.row for r in rows] == [1, 2, 3, 4]
    assert rows[0].spec.job_id.startswith("launch-daily-eye-care-moist") and rows[3].spec.quality == "premium"
    assert rows[0].spec.job_id == read_campaign_file(path, path.name)[0].spec.job_id
    assert rows[0].spec.job_id != rows[3].spec.job_id  # same brief, other row and quality: another job
    assert rows[1].error.startswith("(row): not valid JSON")
    assert rows[2].error.startswith("brief.tone: must be snake_case")
    for row in rows:
        if row.spec:
            JobSpec.model_validate(row.spec.model_dump())  # ids fit the JobSpec pattern


def test_young_files_wait_for_the_next_tick(tmp_path):
    (tmp_path / "fresh.json").write_text(json.dumps(BRIEF))
    collected = collect(tmp_path, lambda _: False)
    assert collected.waiting == ["fresh.json"] and not collected.new and "fresh.json" not in collected.cursor


def test_recurring_schedule_makes_each_brief_once_per_night(env):
    instance, store, campaigns = env
    (campaigns / "recurring").mkdir()
    (campaigns / "recurring" / "daily.jsonl").write_text(json.dumps(BRIEF) + "\n")
    schedule = defs.resolve_schedule_def("recurring_campaigns")
    from datetime import datetime

    def tick(day: int):
        when = datetime(2026, 3, day, 2, tzinfo=UTC)
        with build_schedule_context(instance=instance, scheduled_execution_time=when, resources={"store": store},
                                    repository_def=defs.get_repository_def()) as context:
            return list(schedule.evaluate_tick(context).run_requests or [])

    first = tick(1)
    assert len(first) == 1 and first[0].partition_key.startswith("daily-20260301-")
    assert instance.has_dynamic_partition("jobs", first[0].partition_key)
    assert tick(1) == []  # the same night again: nothing new
    assert len(tick(2)) == 1  # the next night: a new job


@pytest.fixture
def fast_defs(env):
    _, store, _ = env
    return Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=defs.jobs, sensors=defs.sensors,
                       resources={**defs.resources, "store": store, "ffmpeg": FFmpegRunner(preset="ultrafast")})


def test_chain_carries_a_sensor_made_job_to_the_final_video(env, fast_defs):
    """Daemon-free: evaluate the real sensors, launch what they ask for in-process, repeat."""
    instance, store, campaigns = env
    (campaigns / "one.json").write_text(json.dumps({"brief": {**BRIEF, "duration": 5}, "brand": BRAND}))
    settled(campaigns / "one.json")
    made, _ = evaluate(instance, store)
    apply_partitions(instance, made)
    chain = fast_defs.resolve_sensor_def("job_chain_sensor")

    launched: list[tuple[str, str]] = []
    seen_keys: set[str] = set()
    pending, cursor = list(made.run_requests), None
    for _ in range(6):
        for request in pending:
            assert request.run_key not in seen_keys, f"{request.run_key} requested twice"
            seen_keys.add(request.run_key)
            result = fast_defs.resolve_job_def(request.job_name).execute_in_process(
                instance=instance, partition_key=request.partition_key, tags=request.tags,
                run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
            assert result.success
            launched.append((request.job_name, str(request.partition_key)))
        with build_sensor_context(instance=instance, cursor=cursor, resources={"store": store},
                                  definitions=fast_defs) as context:
            result = chain(context)
        cursor, pending = result.cursor, list(result.run_requests or [])
        if not pending:
            break

    job_id = made.run_requests[0].partition_key
    assert launched == [("storyboard_job", job_id),
                        ("scene_job", f"{job_id}|scene_001"), ("scene_job", f"{job_id}|scene_002"),
                        ("scene_job", f"{job_id}|scene_003"), ("final_video_job", job_id)]
    info = probe(layout.video_path(store, job_id))
    assert (info.width, info.height, info.frames) == (1080, 1920, 120)
    report = json.loads(layout.checks_path(store, job_id).read_text())
    assert report["passed"], report["failed"]

    with build_sensor_context(instance=instance, cursor=None, resources={"store": store},
                              definitions=fast_defs) as context:  # replay from the start: run keys dedupe
        replay = chain(context)
    assert {r.run_key for r in replay.run_requests or []} <= seen_keys


def test_runs_that_are_not_chained_are_left_alone(env, fast_defs):
    instance, store, _ = env
    from sparklio_assets.jobs import create_job

    spec = create_job(JobSpec(job_id="by-hand", brief={**BRIEF, "duration": 5}), instance, store)
    result = fast_defs.resolve_job_def("storyboard_job").execute_in_process(
        instance=instance, partition_key=spec.job_id, tags={JOB_TAG: spec.job_id})
    assert next_run_requests(result.dagster_run, instance, store) == []
    chained = fast_defs.resolve_job_def("storyboard_job").execute_in_process(
        instance=instance, partition_key=spec.job_id, tags={JOB_TAG: spec.job_id, CHAIN_TAG: "auto"})
    requests = next_run_requests(chained.dagster_run, instance, store)
    assert [r.partition_key.keys_by_dimension["scene"] for r in requests] == ["scene_001", "scene_002", "scene_003"]
    assert all(r.tags[CHAIN_ID_TAG] == chained.run_id for r in requests)
    assert instance.get_run_by_id(chained.run_id).tags[CHAIN_TAG] == "auto"


def test_campaign_ids_follow_the_brief_not_its_row(tmp_path):
    """Issue 14: inserting, deleting or reordering rows makes only the new or changed briefs."""
    rows = ['acme,Acme Cold Brew,commuters,awareness,12,energetic_fun,tiktok,"#F4F1EC;#1F3A5F",ACME\n',
            'acme,Acme Tea,students,awareness,10,calm,tiktok,"#F4F1EC;#1F3A5F",ACME\n',
            'acme,Acme Soda,gamers,conversion,15,playful_bright,tiktok,"#FFF3B0;#E4572E",ACME\n']
    path = tmp_path / "retail.csv"

    def ids(*lines: str) -> dict[str, str]:
        path.write_text(HEADER + "".join(lines))
        return {r.spec.brief.product: r.spec.job_id for r in read_campaign_file(path, path.name)}

    before = ids(*rows)
    inserted = ids('acme,Acme Water,runners,awareness,8,calm,tiktok,"#F4F1EC;#1F3A5F",ACME\n', *rows)
    assert {k: v for k, v in inserted.items() if k != "Acme Water"} == before
    assert ids(rows[2], rows[0]) == {k: before[k] for k in ("Acme Soda", "Acme Cold Brew")}  # deleted + reordered
    edited = ids(rows[0], rows[1].replace(",10,", ",11,"), rows[2])
    assert edited["Acme Tea"] != before["Acme Tea"]
    kept = ("Acme Cold Brew", "Acme Soda")
    assert {k: edited[k] for k in kept} == {k: before[k] for k in kept}
    assert before["Acme Cold Brew"].startswith("retail-acme-cold-brew-")


def test_an_undecodable_line_skips_only_that_line(tmp_path):
    jsonl = tmp_path / "launch.jsonl"
    jsonl.write_bytes(json.dumps(BRIEF).encode() + b"\n" + b'{"product": "\xff\xfe bad"}\n'
                      + json.dumps({**BRIEF, "product": "다른 제품"}, ensure_ascii=False).encode() + b"\n")
    rows = read_campaign_file(jsonl, jsonl.name)
    assert [r.row for r in rows] == [1, 2, 3]
    assert rows[0].spec and rows[2].spec and rows[2].spec.brief.product == "다른 제품"
    assert rows[1].spec is None and rows[1].error == "(row): not UTF-8 text (byte 0xff at column 14)"
    csv_file = tmp_path / "retail.csv"
    csv_file.write_bytes(HEADER.encode() + b'acme,Acme \xe9 Tea,students,awareness,10,calm,tiktok,,\n'
                         + b'acme,Acme Cold Brew,commuters,awareness,12,energetic_fun,tiktok,"#F4F1EC;#1F3A5F",ACME\n')
    rows = read_campaign_file(csv_file, csv_file.name)
    assert rows[0].error.startswith("(row): not UTF-8 text (byte 0xe9") and rows[0].row == 2
    assert rows[1].spec.brief.product == "Acme Cold Brew"


def test_a_row_may_name_a_brand_folder_with_its_logo_and_packshot(tmp_path):
    """`brand_kit`: a brand folder (its brand.json, logo and packshot), relative to the campaign file."""
    import shutil

    shutil.copytree(DATA / "demo_kit", tmp_path / "brands" / "daily")
    path = tmp_path / "retail.csv"
    path.write_text("brand_id,product,target_audience,goal,duration,tone,channels,brand_kit\n"
                    "d,Daily Eye Care Moisturizer,office workers,awareness,10,calm,instagram_reels,brands/daily\n"
                    "d,Daily Eye Care Moisturizer,students,awareness,10,calm,instagram_reels,brands/nowhere\n")
    good, missing = read_campaign_file(path, path.name)
    assert good.error is None, good.error
    assert good.spec.brand.logo == str(tmp_path / "brands" / "daily" / "logo.png")
    assert [p.path for p in good.spec.brand.product_images] == [str(tmp_path / "brands" / "daily" / "product.png")]
    assert missing.spec is None and missing.error.startswith("brand_kit: ") and "does not exist" in missing.error
