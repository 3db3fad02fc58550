"""Segmented assembly benchmark (issue 16): what re-making one scene costs final_video.

    python bench/segments.py                      # 15, 30 and 60 s ads, 3 runs each
    python bench/segments.py --durations 60 --runs 1

For each ad length it prepares key images, overlays and the soundtrack with the built-in engines
(bench/render.py's prepare, not timed), then measures, each run in a fresh subprocess and the
variants interleaved run by run (so a busy neighbour on a shared machine slows all alike):

  single-pass   today's assembly before segments: render.frames_i420 → FFmpegRunner.encode_i420
                of the whole ad with the soundtrack, in one ffmpeg process;
  segmented     segments.assemble from an empty segment folder: one encode per scene, joined by
                stream copy with the soundtrack encoded once (what a first final_video does);
  re-assembly   the same after re-making the middle scene (its overlay re-drawn with new copy):
                only the segments that show it are encoded again, the rest are reused.

Each variant also runs video_probe.verify on the result, as final_video does before it publishes
any video, however made; its seconds are included. Targets: segmented ≤ 1.05 × single-pass;
re-assembly ≤ 0.25 × segmented for the 60 s, 12-scene ad.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.render import load_scenes, prepare  # noqa: E402

KINDS = ("single_pass", "segmented", "reassembly")


def remake_middle(scenes_json: Path) -> int:
    """Re-draw the middle scene's overlay with new copy, as a re-made scene would; its index."""
    from bench.render import demo_inputs
    from sparklio_assets.language import language_of
    from sparklio_assets.overlay import render_overlay
    from sparklio_assets.planner import plan_storyboard

    scenes = json.loads(scenes_json.read_text())
    brief, brand = demo_inputs(round(sum(s["frames"] for s in scenes) / 24))
    plan = plan_storyboard(brief, brand)
    middle = len(scenes) // 2
    scene = plan.scenes[middle].model_copy(update={"onscreen_text": "새 카피로 다시 만든 장면"})
    render_overlay(scene, brand, brief.product, language_of(brief))[0].save(scenes[middle]["overlay"])
    return middle


def measure(kind: str, scenes_json: Path, out: Path) -> dict:
    """One variant, in this (child) process: seconds, and what assembly encoded and reused."""
    from resources.ffmpeg import FFmpegRunner
    from sparklio_assets import segments
    from sparklio_assets.formats import MASTER, SIZES
    from sparklio_assets.models import FPS
    from sparklio_assets.render import frames_i420
    from sparklio_assets.video_probe import verify

    ffmpeg = FFmpegRunner(timeout_s=3600, max_attempts=1)  # a loaded, shared machine is slow, not broken
    audio = scenes_json.with_name("soundtrack.wav")
    scenes = load_scenes(scenes_json)
    width, height = SIZES[MASTER]
    total = sum(s.frames for s in scenes)
    started = time.perf_counter()
    result: dict = {}
    if kind == "single_pass":
        ffmpeg.encode_i420(lambda: frames_i420(scenes), width, height, FPS, out, audio=audio)
    else:
        record = segments.assemble(scenes, {MASTER: (width, height)}, {MASTER: out}, out.with_suffix(".segments"),
                                   ffmpeg, audio, context="bench")
        result = {"encoded": record.encoded, "reused": record.reused, "seconds_saved": record.seconds_saved}
    verify(out, width, height, total, FPS)  # final_video probes whatever it made before publishing it
    return {"seconds": time.perf_counter() - started, **result}


def run_one(kind: str, scenes_json: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", kind, "--scenes", str(scenes_json),
                             "--output", str(out)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def bench_length(duration: int, runs: int, tmp: Path) -> dict:
    workdir = tmp / f"{duration}s"
    workdir.mkdir()
    # In a child, so the measured children do not inherit the preparing process's peak memory.
    subprocess.run([sys.executable, __file__, "--prepare", str(duration), "--output", str(workdir)], check=True)
    scenes_json = workdir / "scenes.json"
    pristine = {p.name: p.read_bytes() for p in workdir.glob("*_overlay.png")}
    row: dict = {"duration": duration, "scenes": len(json.loads(scenes_json.read_text())),
                 **{kind: [] for kind in KINDS}}
    for n in range(runs):
        for path in workdir.glob("*_overlay.png"):  # every run starts from the same ad
            path.write_bytes(pristine[path.name])
        segment_dir = workdir / "segmented.segments"
        shutil.rmtree(segment_dir, ignore_errors=True)
        row["single_pass"].append(run_one("single_pass", scenes_json, workdir / "single_pass.mp4"))
        row["segmented"].append(run_one("segmented", scenes_json, workdir / "segmented.mp4"))
        middle = remake_middle(scenes_json)
        row["reassembly"].append(run_one("reassembly", scenes_json, workdir / "segmented.mp4"))
        row["middle"] = middle
        print(f"  {duration:>2} s run {n + 1}: " + ", ".join(f"{k} {row[k][-1]['seconds']:.2f} s" for k in KINDS)
              + f" (re-assembly encoded {row['reassembly'][-1]['encoded']}, reused "
              f"{row['reassembly'][-1]['reused']})", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=int, nargs="+", default=[15, 30, 60])
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (the median is shown)")
    parser.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scenes", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.scenes, args.output)))
        return
    if args.prepare:
        prepare(args.prepare, args.output)
        return

    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} cores, load average {load:.1f} at start; runs per figure: {args.runs}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparklio-bench-segments-") as tmp:
        for duration in args.durations:
            rows.append(bench_length(duration, args.runs, Path(tmp)))
    print("\n| ad | single-pass s | segmented s | segmented / single-pass | re-assembly s (middle scene) "
          "| segments encoded / reused | re-assembly / segmented |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        med = {k: statistics.median(r["seconds"] for r in row[k]) for k in KINDS}
        last = row["reassembly"][-1]
        print(f"| {row['duration']} s, {row['scenes']} scenes | {med['single_pass']:.2f} | {med['segmented']:.2f} | "
              f"{med['segmented'] / med['single_pass']:.3f} | {med['reassembly']:.2f} | "
              f"{last['encoded']} / {last['reused']} | {med['reassembly'] / med['segmented']:.3f} |")
    print(f"targets: segmented / single-pass ≤ 1.05; re-assembly / segmented ≤ 0.25 at 60 s. "
          f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine slows "
          f"every variant; the ratios are what compare)")


if __name__ == "__main__":
    main()
