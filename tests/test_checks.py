"""Spec 7 quality checks on final_video: a real 5 s ad made from the shipped brand kit (logo and
packshot files) passes all nine; a deliberately wrong video fails all nine, in Dagster (the UI's
check results) and in final/checks.json (the API's)."""

import json
import shutil
from pathlib import Path

import pytest
from dagster import AssetSelection, DagsterEventType, Definitions, define_asset_job, instance_for_test

from resources.artifacts import ArtifactStore
from resources.ffmpeg import FFmpegRunner
from sparklio_assets import store_paths as layout
from sparklio_assets.checks import CHECKS, inspect_video, read_report
from sparklio_assets.definitions import defs
from sparklio_assets.files import write_model
from sparklio_assets.models import BrandKit, JobSpec
from sparklio_assets.pipeline import QUIET, create_job, run_job

DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
JOB = "checked-ad"


def evaluations(instance, run_id: str) -> dict:
    """The check results as the UI shows them: name → AssetCheckEvaluation."""
    events = instance.all_logs(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    return {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data for e in events}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("checks")
    store = ArtifactStore(home=str(root / "home"))
    (root / "dagster").mkdir()
    brief = {**json.loads((DATA / "demo_brief.json").read_text()), "duration": 5}
    spec = JobSpec(job_id=JOB, brief=brief, brand=BrandKit.from_file(DATA / "demo_kit" / "brand.json"))
    # Re-runs just the checks (the UI's "Execute checks"), leaving the video as it is.
    checks_only = define_asset_job("final_video_checks", selection=AssetSelection.checks_for_assets("final_video"))
    test_defs = Definitions(assets=defs.assets, asset_checks=defs.asset_checks, jobs=[*defs.jobs, checks_only],
                            resources={**defs.resources, "store": store, "ffmpeg": FFmpegRunner(preset="ultrafast")})
    with instance_for_test(temp_dir=str(root / "dagster")) as instance:
        create_job(spec, instance, store)
        run_job(JOB, test_defs, instance, store)
        yield instance, store, test_defs


def test_a_real_ad_passes_every_check(made):
    instance, store, _ = made
    final = instance.get_runs(limit=1)[0]
    assert final.job_name == "final_video_job"
    results = evaluations(instance, final.run_id)
    assert set(results) == set(CHECKS)
    for name, result in results.items():
        assert result.passed, f"{name}: {result.description}"
        assert result.partition == JOB
        assert "summary" in result.metadata and "details" in result.metadata
    report = read_report(store, JOB)
    assert report["passed"] and report["failed"] == [] and len(report["checks"]) == 9
    by_name = {c["name"]: c for c in report["checks"]}
    blocks = by_name["text_contrast"]["details"]["blocks"]
    assert blocks and all(b["ratio"] >= 4.5 and b["inside_safe_area"] for b in blocks)
    assert by_name["product_present"]["details"]["scenes"], "the 5 s ad shows the packshot"
    assert layout.checks_path(store, JOB).parent == layout.video_path(store, JOB).parent


def test_a_wrong_video_fails_every_check_in_dagster_and_the_report(made, capsys):
    """720x1280, 30 fps, 4 s, ~1 Mbps of grey noise: no brand colours, no logo, no readable copy."""
    instance, store, test_defs = made
    wrong = "wrong-ad"
    shutil.copytree(store.job_dir(JOB), store.job_dir(wrong))
    write_model(layout.job_path(store, wrong), layout.read_job(store, wrong).model_copy(update={"job_id": wrong}))
    FFmpegRunner(preset="ultrafast").run(
        ["-f", "lavfi", "-i", "color=c=0x555555:s=720x1280:r=30:d=4,noise=alls=40:allf=t",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "1M", "-pix_fmt", "yuv420p", "-f", "mp4"],
        layout.video_path(store, wrong))
    instance.add_dynamic_partitions("jobs", [wrong])

    result = test_defs.resolve_job_def("final_video_checks").execute_in_process(
        instance=instance, tags={"dagster/partition": wrong}, run_config=QUIET)
    assert result.success  # failing checks flag the video; they do not fail the run
    results = evaluations(instance, result.run_id)
    assert set(results) == set(CHECKS)
    failed = {name for name, r in results.items() if not r.passed}
    assert failed == set(CHECKS), {n: r.description for n, r in results.items() if r.passed}
    assert "720x1280" in results["resolution"].description
    assert "30 fps" in results["fps"].description
    assert "logo not found" in results["logo_placement"].description
    assert "packshot not found" in results["product_present"].description

    report = read_report(store, wrong)
    assert not report["passed"] and set(report["failed"]) == set(CHECKS)
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["bitrate"]["details"]["bitrate_mbps"] < 5
    assert by_name["brand_palette"]["severity"] == "WARN" and by_name["duration"]["severity"] == "ERROR"

    from sparklio_assets.cli import _print_checks  # what `sparklio generate` prints before exiting 3
    capsys.readouterr()
    assert _print_checks(store, wrong) is False
    printed = capsys.readouterr().out
    assert "✗ check resolution       720x1280 (want 1080x1920)" in printed
    assert "✗ check brand_palette" in printed and "✓" not in printed


def test_each_brand_check_catches_its_own_fault(made):
    """Same real video, but the request disagrees with it: only the matching check fails."""
    _, store, _ = made
    job = layout.read_job(store, JOB)
    plan = layout.read_storyboard(store, JOB)

    other = "other-brand"
    shutil.copytree(store.job_dir(JOB), store.job_dir(other))
    brand = job.brand_kit.model_copy(update={"colors": ["#4A2D7C", "#E0F0E8"]})
    write_model(layout.job_path(store, other), job.model_copy(update={"job_id": other, "brand": brand}))
    failed = {o.name: o for o in inspect_video(store, other) if not o.passed}
    assert set(failed) == {"brand_palette"}
    assert "missing #4A2D7C" in failed["brand_palette"].summary
    assert "primary #4A2D7C on 0.0% of pixels (want ≥ 1%)" in failed["brand_palette"].summary

    moved = "logo-moved"
    shutil.copytree(store.job_dir(JOB), store.job_dir(moved))
    scenes = [s.model_copy(update={"brand_elements": ["logo_bottom_right"]}) if s.id == "scene_002" else s
              for s in plan.scenes]  # the storyboard asks for a logo the video does not have there
    write_model(layout.storyboard_path(store, moved), plan.model_copy(update={"scenes": scenes}))
    failed = {o.name: o for o in inspect_video(store, moved) if not o.passed}
    assert set(failed) == {"logo_placement"}
    assert failed["logo_placement"].summary.startswith("scene_002: logo not found")


def test_bottom_right_means_the_bottom_right_quarter_of_the_safe_area():
    from sparklio_assets.checks import logo_in_place
    from sparklio_assets.overlay import Box

    assert logo_in_place(Box(651, 1410, 960, 1480), ["logo_bottom_right"])
    assert logo_in_place(Box(424, 1410, 960, 1480), ["logo_bottom_right"])  # a long logo reaches past the middle
    assert not logo_in_place(Box(120, 1410, 420, 1480), ["logo_bottom_right"])  # bottom-left
    assert not logo_in_place(Box(651, 280, 960, 350), ["logo_bottom_right"])  # top-right
    assert not logo_in_place(Box(700, 1500, 1000, 1570), ["logo_bottom_right"])  # under the platform's UI
    assert logo_in_place(Box(337, 280, 703, 363), ["logo"])


def test_every_rendition_is_held_to_the_same_checks(made):
    """The brief now also asks for YouTube (16:9): with no 16:9 file every per-format check fails
    naming it; with a 16:9 file of the right shape but no ad in it, the shape checks pass and the
    brand checks fail for 16:9 alone, while the master's results stand beside them."""
    _, store, _ = made
    job = layout.read_job(store, JOB)
    wide = "wide-ad"
    shutil.copytree(store.job_dir(JOB), store.job_dir(wide))
    brief = job.brief.model_copy(update={"channels": [*job.brief.channels, "youtube"]})
    write_model(layout.job_path(store, wide), job.model_copy(update={"job_id": wide, "brief": brief}))

    failed = {o.name: o for o in inspect_video(store, wide) if not o.passed}
    assert set(failed) == set(CHECKS) - {"bitrate", "soundtrack"}
    assert all("16:9: the 16:9 video is missing" in o.summary for o in failed.values())

    FFmpegRunner(preset="ultrafast").run(
        ["-f", "lavfi", "-i", "color=c=0x555555:s=1920x1080:r=24:d=5,noise=alls=40:allf=t",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mp4"],
        layout.rendition_path(store, wide, "16:9"))
    outcomes = {o.name: o for o in inspect_video(store, wide)}
    failed = {name for name, o in outcomes.items() if not o.passed}
    assert failed == {"brand_palette", "logo_placement", "text_contrast", "product_present"}
    for name in failed:
        renditions = outcomes[name].details["renditions"]
        assert renditions["16:9"]["passed"] is False and "; 16:9: " in outcomes[name].summary, name
    assert outcomes["resolution"].details["renditions"]["16:9"]["width"] == 1920
    assert outcomes["product_present"].details["scenes"], "the master's own measurements stay at the top"
