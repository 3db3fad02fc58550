"""Render benchmark (issue 3): how close the assembly gets to the H.264 encoder's own speed.

    python bench/render.py                       # 15, 30 and 60 s; 3 runs each; moviepy reference
    python bench/render.py --durations 15 --runs 3
    python bench/render.py --no-reference        # skip the (slow) moviepy reference

For each ad length it prepares ready key images, overlays and the soundtrack with the built-in
engines (not timed), then measures, each in a fresh subprocess so peak RSS is that variant's own:

  limit            FFmpeg alone encoding as many 1080x1920 frames of `-f lavfi testsrc2`, with
                   exactly the product's encoder settings (FFmpegRunner.encoder_args);
  limit (frames)   FFmpeg alone encoding the same ad's frames, pre-rendered to a raw file: the
                   encoder's cost on this content, which a zooming picture makes far higher than
                   on testsrc2's mostly static pattern;
  render only      the product's frame renderer with no encoder (frames made and dropped);
  ours             the product's assembly (render.frames_i420 → FFmpegRunner.encode_i420 per
                   scene segment, joined by stream copy: segments.assemble from an empty folder),
                   muxing the ad's soundtrack (made up front, like the key images) as AAC
                   (bench/segments.py compares it with a single pass and times a re-assembly);
  reference        the same ad made the way moviepy-based tools do it (ImageClip + per-frame
                   resize + TextClip + CompositeVideoClip + crossfade + write_videofile), with
                   the same encoder settings and the same soundtrack.

It also encodes the first ad's frames with five x264 presets, scores each against the source
(SSIM, PSNR) and times the same preset on testsrc2: the evidence behind the product's preset, and
the encoder's own extra cost on the ad's content (the floor under ours/limit). Wall seconds are
the median of --runs runs; RSS is the peak of the Python process and of its
ffmpeg child, each measured by the kernel (getrusage). Finally it times `sparklio generate` of
the 15 s demo brief end to end on the built-in engines, split by stage.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = ("limit", "limit_frames", "render_only", "ours", "reference")


# ---------------------------------------------------------------------------------------------
# Preparation (not timed): storyboard, key images and overlays for an ad of a given length.

def demo_inputs(duration: int):
    """The packaged demo brief and brand kit, with the ad length set to `duration`."""
    from importlib.resources import files

    from sparklio_assets.models import BrandKit, Brief

    data = files("sparklio_assets") / "data"
    brief = Brief.model_validate({**json.loads((data / "demo_brief.json").read_text()), "duration": duration})
    return brief, BrandKit.model_validate(json.loads((data / "demo_brand.json").read_text()))


def prepare(duration: int, workdir: Path) -> Path:
    """Write key images, overlays and a scenes.json for a `duration`-second ad into workdir."""
    from sparklio_assets.image_engine import render_key_image
    from sparklio_assets.language import language_of
    from sparklio_assets.models import MotionRecord
    from sparklio_assets.overlay import render_overlay
    from sparklio_assets.planner import plan_storyboard

    brief, brand = demo_inputs(duration)
    plan = plan_storyboard(brief, brand)
    scenes = []
    for scene in plan.scenes:
        key, overlay = workdir / f"{scene.id}_key.png", workdir / f"{scene.id}_overlay.png"
        render_key_image(scene, brand, brief.product, seed=scene.id).save(key)
        render_overlay(scene, brand, brief.product, language_of(brief))[0].save(overlay)
        motion = MotionRecord(scene_id=scene.id, engine="kenburns", motion_style=scene.motion_style,
                              duration_seconds=scene.duration_seconds, image_path=str(key))
        scenes.append({"frames": scene.frames, "motion": motion.model_dump(), "overlay": str(overlay),
                       "text": scene.onscreen_text})
    # The soundtrack (music only: no TTS here) is made up front too; assembly muxes it.
    from sparklio_assets.soundtrack import make_bed, normalize, write_wav

    bed, _, _ = make_bed(plan.metadata.bgm_mood, [s.duration_seconds for s in plan.scenes], seed="bench")
    write_wav(workdir / "soundtrack.wav", normalize(bed))
    path = workdir / "scenes.json"
    path.write_text(json.dumps(scenes, ensure_ascii=False))
    return path


def load_scenes(path: Path):
    from sparklio_assets.models import MotionRecord
    from sparklio_assets.render import SceneInput

    return [SceneInput(s["frames"], MotionRecord.model_validate(s["motion"]), Path(s["overlay"]))
            for s in json.loads(path.read_text())]


def write_raw_frames(scenes_json: Path, raw: Path) -> None:
    from sparklio_assets.render import frames_i420

    with raw.open("wb") as f:
        for frame in frames_i420(load_scenes(scenes_json)):
            f.write(frame)


# ---------------------------------------------------------------------------------------------
# One measurement, run in its own process.

def measure(kind: str, scenes_json: Path, out: Path) -> dict:
    from resources.ffmpeg import FFmpegRunner
    from sparklio_assets.models import FPS
    from sparklio_assets.overlay import HEIGHT, WIDTH
    from sparklio_assets.render import frames_i420

    ffmpeg = FFmpegRunner()
    scenes = load_scenes(scenes_json)
    total = sum(s.frames for s in scenes)
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    if kind == "limit":
        source = ["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-frames:v", str(total)]
        ffmpeg.run(source + ffmpeg.encoder_args(FPS), out)
    elif kind == "limit_frames":
        raw = scenes_json.with_name("frames.yuv")
        source = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", str(raw)]
        ffmpeg.run(source + ffmpeg.encoder_args(FPS), out)
    elif kind == "render_only":
        for _ in frames_i420(scenes):
            pass
    elif kind == "ours":  # the product's first assembly: one segment per scene, joined by stream copy
        import shutil

        from sparklio_assets import segments
        from sparklio_assets.formats import MASTER

        shutil.rmtree(out.with_suffix(".segments"), ignore_errors=True)
        segments.assemble(scenes, {MASTER: (WIDTH, HEIGHT)}, {MASTER: out}, out.with_suffix(".segments"), ffmpeg,
                          scenes_json.with_name("soundtrack.wav"), context="bench")
    elif kind == "reference":
        moviepy_reference(scenes_json, out, ffmpeg)
    else:
        raise ValueError(f"unknown kind {kind}")
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "frames": total, "cpu_seconds": cpu_seconds() - cpu_before,
            "rss_python_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_ffmpeg_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ffmpeg), user + system."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def moviepy_reference(scenes_json: Path, out: Path, ffmpeg) -> None:
    """The same ad as moviepy-based peers build it: a slow zoom by per-frame resize, a TextClip
    over it, clips overlapping by the crossfade with CrossFadeIn, then write_videofile."""
    from moviepy import AudioFileClip, CompositeVideoClip, ImageClip, TextClip, concatenate_videoclips, vfx

    from sparklio_assets.models import FPS
    from sparklio_assets.overlay import HEIGHT, WIDTH
    from sparklio_assets.render import CROSSFADE_FRAMES
    from sparklio_assets.typography import font_path

    fade = CROSSFADE_FRAMES / FPS
    scenes = json.loads(scenes_json.read_text())
    clips = []
    for i, s in enumerate(scenes):
        # Each clip but the last runs one crossfade longer, so the overlapped total equals ours.
        length = s["frames"] / FPS + (fade if i < len(scenes) - 1 else 0)
        picture = (ImageClip(s["motion"]["image_path"]).with_duration(length)
                   .resized(lambda t, d=length: 1.0 + 0.08 * t / d).with_position("center"))
        text = (TextClip(font=str(font_path()), text=s["text"] or " ", font_size=76, color="white",
                         stroke_color="black", stroke_width=3, method="caption", size=(900, None))
                .with_duration(length).with_position(("center", 1250)))
        clip = CompositeVideoClip([picture, text], size=(WIDTH, HEIGHT)).with_duration(length)
        clips.append(clip.with_effects([vfx.CrossFadeIn(fade)]) if i else clip)
    final = concatenate_videoclips(clips, method="compose", padding=-fade)
    final = final.with_audio(AudioFileClip(str(scenes_json.with_name("soundtrack.wav"))).with_duration(final.duration))
    args = ffmpeg.encoder_args(FPS)
    codec_and_preset = {"-c:v", "-preset"}
    params = [a for i, a in enumerate(args) if a not in codec_and_preset and args[i - 1] not in codec_and_preset]
    final.write_videofile(str(out), fps=FPS, codec="libx264", preset=ffmpeg.preset, audio_codec="aac",
                          audio_bitrate=ffmpeg.audio_bitrate, audio_fps=48000, ffmpeg_params=params, logger=None)


def prepare_in_child(duration: int, workdir: Path) -> Path:
    """prepare() and the raw frames, in a child process. Not here: Linux carries a process's peak
    RSS into the children it spawns (vfork + exec), so a parent grown by preparing a 60 s ad
    would inflate every measurement's peak RSS."""
    subprocess.run([sys.executable, __file__, "--prepare", str(duration), "--output", str(workdir)], check=True)
    return workdir / "scenes.json"


def run_one(kind: str, scenes_json: Path, out: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--measure", kind, "--scenes", str(scenes_json),
                             "--output", str(out)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# End to end: `sparklio generate` of the 15 s demo on the built-in engines, by stage.

def end_to_end(home: Path) -> dict[str, float]:
    """Run the 15 s demo through Dagster (as `sparklio generate` does) in a child process with
    its own SPARKLIO_HOME / DAGSTER_HOME; seconds per stage and in total."""
    env = {**os.environ, "SPARKLIO_HOME": str(home), "DAGSTER_HOME": str(home / "dagster")}
    result = subprocess.run([sys.executable, __file__, "--e2e-child"], capture_output=True, text=True, env=env,
                            cwd=ROOT, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"end-to-end run failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def end_to_end_child() -> dict[str, float]:
    from dagster import DagsterInstance

    from resources.artifacts import ArtifactStore
    from sparklio_assets.definitions import defs
    from sparklio_assets.models import JobSpec
    from sparklio_assets.pipeline import create_job, ensure_dagster_home, run_job

    started = time.perf_counter()
    store = ArtifactStore()
    ensure_dagster_home(store.folder)
    instance = DagsterInstance.get()
    brief, brand = demo_inputs(15)
    spec = create_job(JobSpec(brief=brief, brand=brand), instance, store)
    stages: dict[str, float] = {}
    run_job(spec.job_id, defs, instance, store, on_stage=lambda r: stages.__setitem__(r.stage, r.seconds))
    stages["total"] = time.perf_counter() - started
    return stages


# ---------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--durations", type=int, nargs="+", default=[15, 30, 60])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (the median is shown)")
    parser.add_argument("--reference-runs", type=int, default=None,
                        help="runs of the slow moviepy reference (default: --runs)")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--no-e2e", action="store_true")
    parser.add_argument("--no-presets", action="store_true", help="skip the x264 preset speed/quality comparison")
    parser.add_argument("--measure", choices=KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--e2e-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scenes", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.prepare:  # child process: key images, overlays, soundtrack and raw frames for one length
        write_raw_frames(prepare(args.prepare, args.output), args.output / "frames.yuv")
        return
    if args.measure:  # child process: one measurement, one JSON line
        print(json.dumps(measure(args.measure, args.scenes, args.output)))
        return
    if args.e2e_child:
        print(json.dumps(end_to_end_child()))
        return

    kinds = [k for k in KINDS if not (args.no_reference and k == "reference")]
    print(f"machine: {os.cpu_count()} cores; runs per figure: {args.runs}; encoder: "
          f"{' '.join(__import__('resources.ffmpeg', fromlist=['FFmpegRunner']).FFmpegRunner().encoder_args(24)[:4])}",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sparklio-bench-") as tmp:
        for duration in args.durations:
            workdir = Path(tmp) / f"{duration}s"
            workdir.mkdir()
            scenes_json = prepare_in_child(duration, workdir)
            row = {"duration": duration, "scenes": len(json.loads(scenes_json.read_text()))}
            for kind in kinds:
                runs = args.reference_runs or args.runs if kind == "reference" else args.runs
                results = [run_one(kind, scenes_json, workdir / f"{kind}.mp4") for _ in range(runs)]
                row[kind] = {"seconds": statistics.median(r["seconds"] for r in results),
                             "cpu_seconds": statistics.median(r["cpu_seconds"] for r in results),
                             "rss_python_mb": max(r["rss_python_mb"] for r in results),
                             "rss_ffmpeg_mb": max(r["rss_ffmpeg_mb"] for r in results),
                             "frames": results[0]["frames"]}
                each = ", ".join(f"{r['seconds']:.2f}" for r in results)
                print(f"  {duration:>2} s  {kind:<13} {row[kind]['seconds']:7.2f} s wall (runs: {each}), "
                      f"{row[kind]['cpu_seconds']:.1f} CPU s", flush=True)
            if duration == args.durations[0] and not args.no_presets:
                compare_presets(workdir / "frames.yuv", duration, row["ours"]["frames"])
            (workdir / "frames.yuv").unlink()
            rows.append(row)
        print_table(rows, kinds)
        if not args.no_e2e:
            stages = end_to_end(Path(tmp) / "home")
            assembly = stages["final_video"]
            print("\nsparklio generate, 15 s demo, built-in engines (seconds per stage; total includes start-up):")
            for stage, seconds in stages.items():
                print(f"  {stage:<12} {seconds:7.2f}")
            print(f"  end-to-end / assembly = {stages['total'] / assembly:.2f}  (target ≤ 2)")


def compare_presets(raw: Path, duration: int, frames: int) -> None:
    """What the encoder preset costs and buys on this content: encode the same raw frames with
    each preset at the product's bitrate, score against the source (SSIM, PSNR), and time the same
    preset on testsrc2. Their ratio is x264's own extra cost on the ad's content, which no
    renderer can remove: ours/limit can be no lower than it."""
    from resources.ffmpeg import FFmpegRunner
    from sparklio_assets.models import FPS
    from sparklio_assets.overlay import HEIGHT, WIDTH

    source = ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS), "-i", str(raw)]
    testsrc = ["-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS}", "-frames:v", str(frames)]
    print(f"\nx264 presets on the {duration} s ad's own frames (same bitrate; quality against the source) and on "
          f"testsrc2:")
    for preset in ("medium", "faster", "veryfast", "superfast", "ultrafast"):
        runner = FFmpegRunner(preset=preset)
        out = raw.with_name(f"preset_{preset}.mp4")
        started = time.perf_counter()
        runner.run(testsrc + runner.encoder_args(FPS), out)
        trivial = time.perf_counter() - started
        started = time.perf_counter()
        runner.run(source + runner.encoder_args(FPS), out)
        seconds = time.perf_counter() - started
        scored = subprocess.run([runner.exe(), "-hide_banner", "-nostdin", "-i", str(out), *source, "-lavfi",
                                 "[0:v][1:v]ssim;[0:v][1:v]psnr", "-f", "null", "-"],
                                capture_output=True, text=True, check=True).stderr
        ssim = scored.split("SSIM")[1].split("All:")[1].split()[0]
        psnr = scored.split("PSNR")[1].split("average:")[1].split()[0]
        print(f"  {preset:<9} ad {seconds:6.2f} s   testsrc2 {trivial:6.2f} s   content cost ×{seconds / trivial:.2f}"
              f"   SSIM {ssim}   PSNR {psnr} dB" + ("   ← product default" if preset == FFmpegRunner().preset else ""),
              flush=True)
        out.unlink()


def print_table(rows: list[dict], kinds: list[str]) -> None:
    names = {"limit": "limit", "limit_frames": "limit(frames)", "render_only": "render only", "ours": "ours",
             "reference": "reference"}
    print("\n| ad | frames | " + " | ".join(f"{names[k]} s" for k in kinds)
          + " | ours/limit | ours/limit(frames) | reference/ours | peak RSS ours (py + ffmpeg) |"
          + (" peak RSS reference |" if "reference" in kinds else ""))
    print("|" + "---|" * (2 + len(kinds) + 4 + ("reference" in kinds)))
    for row in rows:
        ours = row["ours"]
        cells = [f"{row['duration']} s, {row['scenes']} scenes", str(ours["frames"])]
        cells += [f"{row[k]['seconds']:.2f}" for k in kinds]
        cells.append(f"{ours['seconds'] / row['limit']['seconds']:.2f}")
        cells.append(f"{ours['seconds'] / row['limit_frames']['seconds']:.2f}")
        cells.append(f"{row['reference']['seconds'] / ours['seconds']:.1f}" if "reference" in row else "n/a")
        cells.append(f"{ours['rss_python_mb']:.0f} + {ours['rss_ffmpeg_mb']:.0f} MB")
        if "reference" in row:
            ref = row["reference"]
            cells.append(f"{ref['rss_python_mb']:.0f} + {ref['rss_ffmpeg_mb']:.0f} MB")
        print("| " + " | ".join(cells) + " |")
    print("targets: ours/limit ≤ 1.3; reference/ours ≥ 4; peak RSS of the assembly ≤ 1 GB at 60 s")


if __name__ == "__main__":
    main()
