"""The GPU worker a user stands up: the preflight (`sparklio worker check`, and once per job),
the settings file, and the packshot kept exact on the GPU path (key images and motion)."""

import copy
import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image, ImageDraw

from comfy_graphs import animatediff_clip, configured_graphs, sdxl_product_scene
from comfy_standin import OBJECT_INFO, ComfyStandin
from local_servers import free_port
from resources.artifacts import ArtifactStore
from resources.comfyui import ComfyModels, ComfyUIClient, ComfyUIResource, validate_graph
from resources.comfyui.config import ConfigFileError, comfy_resource
from resources.comfyui.preflight import check, needs_of
from sparklio_assets import comfy_engines
from sparklio_assets.cli import main
from sparklio_assets.comfy_engines import (
    layer_path,
    make_key_image,
    make_motion_clip,
    product_box,
    product_layer,
)
from sparklio_assets.models import BrandKit, Brief, JobSpec, KeyImageRecord, MotionRecord, Scene

DATA = Path(__file__).resolve().parent / "data"
PRODUCT_DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
_SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "comfyui" / "object_info.json"
REFERENCE = _SHARED if _SHARED.is_file() else OBJECT_INFO  # the same schemas (checked below when both exist)
MODELS = ComfyModels()
BRAND = BrandKit.model_validate_json((PRODUCT_DATA / "demo_brand.json").read_text())
EXTRA = {("ControlNetLoader", "control_net_name"): [MODELS.controlnet],
         ("IPAdapterModelLoader", "ipadapter_file"): ["ip-adapter-plus_sdxl_vit-h.safetensors"]}


def reference(extra=None, drop_models=(), drop_nodes=()) -> dict:
    info = json.loads(REFERENCE.read_text())
    for (class_type, input_name), names in (extra or {}).items():
        spec = info[class_type]["input"]["required"][input_name]
        spec[0] = list(spec[0]) + names
    for schema in info.values():
        for spec in schema["input"].get("required", {}).values():
            if isinstance(spec[0], list):
                spec[0] = [v for v in spec[0] if v not in drop_models]
    for name in drop_nodes:
        del info[name]
    return info


def packshot(size=(300, 420)) -> Image.Image:
    """A synthetic product photo with alpha: a red bottle with a white label and a blue stripe."""
    img = Image.new("RGBA", size, (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    w, h = size
    d.rounded_rectangle((w * 0.2, h * 0.15, w * 0.8, h * 0.98), radius=w // 10, fill=(200, 30, 40, 255))
    d.rectangle((w * 0.38, h * 0.02, w * 0.62, h * 0.16), fill=(40, 40, 40, 255))
    d.rectangle((w * 0.25, h * 0.45, w * 0.75, h * 0.7), fill=(245, 245, 240, 255))
    d.rectangle((w * 0.25, h * 0.55, w * 0.75, h * 0.6), fill=(20, 60, 200, 255))
    return img


def scene(**overrides) -> Scene:
    fields = dict(id="scene_003", purpose="Solution", duration_seconds=2.0, onscreen_text="hi",
                  image_prompt="a bottle on a marble shelf", motion_style="slow zoom-in", brand_elements=["logo"])
    return Scene(**{**fields, **overrides})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ComfyStandin(tmp_path_factory.mktemp("comfy-worker"), extra_models=EXTRA) as standin:
        yield standin


def fast_client(url: str, **overrides) -> ComfyUIClient:
    settings = dict(timeout_s=60, backoff_s=0.02, poll_interval_s=0.1, connect_timeout_s=1, worker_wait_s=2,
                    cancel_confirm_s=5, models=ComfyModels())
    return ComfyUIClient(url, **{**settings, **overrides})


# ------------------------------------------------------------------------------- preflight


def test_the_stand_in_schemas_are_the_reference_schemas():
    if not _SHARED.is_file():
        pytest.skip("../shared/reference is not beside this checkout")
    assert json.loads(_SHARED.read_text()) == json.loads(OBJECT_INFO.read_text())


def test_preflight_with_every_model_present_is_ready():
    graphs = configured_graphs(MODELS)
    report = check("http://gpu:8188", None, reference(EXTRA), needs_of(graphs, [MODELS.brand_lora]))
    assert report.ready and not report.missing, report.table()
    classes = {n["class_type"] for g in graphs.values() for n in g.values()}
    assert {r.name for r in report.rows if r.kind == "node"} == classes
    models = {r.name for r in report.rows if r.kind == "model"}
    assert {MODELS.checkpoint, MODELS.motion_checkpoint_sd15, MODELS.rife, "mm_sd_v15_v2.ckpt", "mm_sdxl_v10_beta.ckpt",
            "ip-adapter-plus_sdxl_vit-h.safetensors", "ip-adapter-plus_sd15.safetensors",
            "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"} <= models
    assert report.table().splitlines()[-1] == "ready"


def test_preflight_names_every_missing_model_and_node():
    info = reference(drop_models={MODELS.checkpoint, "mm_sd_v15_v2.ckpt"}, drop_nodes={"VHS_VideoCombine"})
    report = check("http://gpu:8188", None, info, needs_of(configured_graphs(MODELS), [MODELS.brand_lora,
                                                                                      MODELS.controlnet]))
    missing = {(r.kind, r.name) for r in report.missing}
    assert missing == {("model", MODELS.checkpoint), ("model", "mm_sd_v15_v2.ckpt"), ("node", "VHS_VideoCombine"),
                       ("model", "ip-adapter-plus_sdxl_vit-h.safetensors")}
    assert not report.ready
    checkpoint = next(r for r in report.missing if r.name == MODELS.checkpoint)
    assert checkpoint.folder == "models/checkpoints" and "key image (standard)" in checkpoint.needed_by
    controlnet = next(r for r in report.rows if r.name == MODELS.controlnet)
    assert not controlnet.present and controlnet.optional, "made without it, with a note: not a blocker"
    table = report.table()
    assert f"✗ model {MODELS.checkpoint}" in table and "→ models/checkpoints" in table
    assert "✗ node  VHS_VideoCombine" in table and "· model controlnet" in table
    assert table.splitlines()[-1].startswith("NOT READY: 4 missing")
    # a standard job is held up by what standard graphs need, not by the premium IPAdapter file
    key = comfy_engines.missing_for(report, "standard", "key image")
    assert {r.name for r in key} == {MODELS.checkpoint}
    assert "ip-adapter-plus_sdxl_vit-h.safetensors" in {r.name for r in
                                                        comfy_engines.missing_for(report, "premium", "key image")}


def test_worker_check_reads_the_worker_and_exits_by_readiness(server, capsys):
    assert main(["worker", "check", server.url]) == 0
    out = capsys.readouterr().out
    assert "ComfyUI 0.3.64" in out and "VRAM" in out and out.rstrip().endswith("ready")
    saved = copy.deepcopy(server.object_info)
    try:
        ckpt = server.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
        ckpt[0] = [n for n in ckpt[0] if n != MODELS.checkpoint]
        assert main(["worker", "check", server.url]) == 1
        out = capsys.readouterr().out
        assert f"✗ model {MODELS.checkpoint}" in out and "NOT READY" in out
    finally:
        server.object_info = saved


def test_worker_check_on_a_down_worker_says_so_in_one_line(capsys):
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["worker", "check", url]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"✗ GPU worker {url}: ComfyWorkerDown") and "unreachable" in lines[0]


# ------------------------------------------------------------------------------ settings file


def test_settings_file_sets_the_comfy_resource(tmp_path, server, capsys, monkeypatch):
    monkeypatch.setenv("SPARKLIO_CONFIG", "")  # `--config` sets it for the process: restored after the test
    config = tmp_path / "sparklio.yaml"
    config.write_text(f"comfy:\n  url: {server.url}\n  steps: 12\n  cfg: 4.5\n  sampler: euler\n  scheduler: normal\n"
                      "  key_width: 512\n  key_height: 896\n  motion_steps: 8\n  motion_denoise: 0.5\n"
                      "  rife_multiplier: 2\n  min_motion_frames: 16\n  worker_wait_s: 900\n", encoding="utf-8")
    comfy = comfy_resource(config)
    assert isinstance(comfy, ComfyUIResource) and comfy.worker_wait_s == 900
    settings = comfy.models()
    key = comfy_engines.sdxl_key_image("p", 1, settings).build()
    sampler = next(n["inputs"] for n in key.values() if n["class_type"] == "KSampler")
    latent = next(n["inputs"] for n in key.values() if n["class_type"] == "EmptyLatentImage")
    assert (sampler["steps"], sampler["cfg"], sampler["sampler_name"], sampler["scheduler"]) == (12, 4.5, "euler", "normal")
    assert (latent["width"], latent["height"]) == (512, 896)
    motion = animatediff_clip("k.png", "p", "parallax movement", 1, settings,
                              frames=comfy_engines.motion_frames(48, models=settings)).build()
    by_class = {n["class_type"]: n["inputs"] for n in motion.values()}
    assert by_class["KSampler"]["steps"] == 8 and by_class["KSampler"]["denoise"] == 0.5
    assert by_class["RIFE VFI"]["multiplier"] == 2 and by_class["VHS_VideoCombine"]["frame_rate"] == 16
    assert by_class["RepeatImageBatch"]["amount"] == 25  # 48 frames at 24 fps from 8 fps ×2
    assert ComfyUIResource().steps == 30 and ComfyUIResource().worker_wait_s >= 600  # the spec's defaults
    assert main(["worker", "check", "--config", str(config)]) == 0  # the URL comes from the file
    assert "ready" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("comfy:\n  stepz: 3\n", "comfy.stepz: unknown field"),
    ("comfy:\n  steps: many\n", "comfy.steps: "),
    ("comfy:\n  key_width: 500\n", "comfy.key_width: "),
    ("comfy: [1, 2\n", "is not valid YAML"),
])
def test_bad_settings_file_names_the_field(tmp_path, text, message):
    config = tmp_path / "sparklio.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigFileError, match=message.replace(".", r"\.")):
        comfy_resource(config)


# ------------------------------------------------------------------------ the product stays


def test_packshot_graph_fits_the_reference_schemas():
    g = sdxl_product_scene("p", "canvas.png", 1, MODELS, lora=MODELS.brand_lora)
    assert validate_graph(g.build(), reference()) == []
    classes = {n["class_type"] for n in g.build().values()}
    assert {"LoadImage", "VAEEncode", "ImageCompositeMasked"} <= classes and "EmptyLatentImage" not in classes
    keep = g.inputs("keep_product")
    assert keep["destination"] == [g.id("product_canvas"), 0] and keep["mask"] == [g.id("product_canvas"), 1]
    assert g.inputs("sampler")["denoise"] == MODELS.product_denoise


def test_key_image_keeps_the_packshot_pixel_exact(server, tmp_path):
    product = packshot()
    out = tmp_path / "key.png"
    with fast_client(server.url) as c:
        record = make_key_image(c, scene(), BRAND, "Glow", "job/scene_003", out, quality="premium",
                                job_id="job", style_reference=tmp_path / "other_scene.png", product_image=product)
        received = server.counters.received[record.note.split()[1].rstrip(",")]
    assert record.engine == "comfyui_packshot" and "packshot kept pixel-exact" in record.note
    frame = np.asarray(Image.open(out).convert("RGB")).astype(int)
    layer = np.asarray(product_layer(product, product.getchannel("A")))
    opaque = layer[:, :, 3] == 255
    assert opaque.sum() > 50_000
    assert np.array_equal(frame[opaque], layer[:, :, :3][opaque].astype(int)), "product pixels are the packshot's"
    x, y, w, h = product_box(product.size)
    around = frame[: y - 20]  # the generated scene above the product differs from the plain canvas tone
    tone = np.array(Image.new("RGB", (1, 1), BRAND.colors[-1]).getpixel((0, 0)))
    assert np.abs(around - tone).mean() > 10
    assert layer_path(out).is_file()
    loads = {n["_meta"]["title"]: n["inputs"]["image"] for n in received.values() if n["class_type"] == "LoadImage"}
    assert "_packshot" in loads["ipadapter_image"], "the IPAdapter reference is the product, not another scene"
    assert "_canvas" in loads["product_canvas"]


def test_scenes_that_do_not_show_the_product_are_generated_freely(server, tmp_path):
    with fast_client(server.url) as c:
        record = make_key_image(c, scene(id="scene_001", purpose="Hook / Attention"), BRAND, "Glow", 1,
                                tmp_path / "key.png", product_image=packshot())
    assert record.engine in ("comfyui_lora", "comfyui_sdxl") and not layer_path(tmp_path / "key.png").exists()


def test_motion_keeps_the_product_still_over_the_moving_scene(server, tmp_path):
    product = packshot()
    key = tmp_path / "key.png"
    with fast_client(server.url) as c:
        make_key_image(c, scene(), BRAND, "Glow", 3, key, product_image=product)
        record = make_motion_clip(c, scene(), key, tmp_path / "clip.mp4", seed=3)
    assert record.engine == "animatediff"
    with av.open(str(tmp_path / "clip.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24").astype(int) for f in container.decode(video=0)]
    assert frames[0].shape == (1920, 1080, 3) and len(frames) >= 24
    layer = np.asarray(product_layer(product, product.getchannel("A")))
    inner = np.zeros(layer.shape[:2], bool)
    x, y, w, h = product_box(product.size)
    inner[y + h // 4: y + 3 * h // 4, x + w // 3: x + 2 * w // 3] = True  # well inside the bottle
    inner &= layer[:, :, 3] == 255
    first, last = frames[0], frames[-1]
    assert np.abs(first[inner] - layer[:, :, :3][inner]).mean() < 4, "the packshot itself, up to H.264"
    assert np.abs(first[inner] - last[inner]).mean() < 2, "the product does not move or morph"
    assert np.abs(first[:600] - last[:600]).mean() > 1, "the scene around it moves"


# -------------------------------------------------------------------- once when a job starts


def _job(job_id: str, quality: str = "standard") -> JobSpec:
    brief = json.loads((PRODUCT_DATA / "demo_brief.json").read_text())
    return JobSpec(job_id=job_id, brief=Brief(**{**brief, "duration": 5}), brand=BRAND, quality=quality)


@pytest.fixture
def unready(tmp_path):
    """A worker without the SDXL checkpoint."""
    with ComfyStandin(tmp_path / "unready") as standin:
        ckpt = standin.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"]
        ckpt[0] = [n for n in ckpt[0] if n != MODELS.checkpoint]
        yield standin


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    from dagster import DagsterInstance

    from sparklio_assets.pipeline import ensure_dagster_home

    monkeypatch.setenv("SPARKLIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("SPARKLIO_COMFYUI_URL", raising=False)
    ensure_dagster_home(tmp_path / "home")
    with DagsterInstance.get() as instance:
        yield tmp_path / "home", instance


def _defs(comfy: ComfyUIResource, home: Path):
    from dagster import Definitions

    from resources.ffmpeg import FFmpegRunner
    from sparklio_assets.assets import final_video, scene_key_image, scene_motion_clip, soundtrack, storyboard
    from sparklio_assets.definitions import defs, final_video_job, scene_job, storyboard_job

    resources = {**defs.resources, "store": ArtifactStore(home=str(home)), "ffmpeg": FFmpegRunner(preset="ultrafast"),
                 "comfy": comfy}
    return Definitions(assets=[storyboard, scene_key_image, scene_motion_clip, soundtrack, final_video],
                       jobs=[storyboard_job, scene_job, final_video_job], resources=resources)


def _comfy(url: str, **overrides) -> ComfyUIResource:
    settings = dict(url=url, backoff_s=0.02, poll_interval_s=0.1, connect_timeout_s=1, worker_wait_s=2)
    return ComfyUIResource(**{**settings, **overrides})


def test_a_job_on_an_unready_worker_fails_at_once_with_the_list(unready, dagster_home):
    from sparklio_assets.pipeline import PipelineError, create_job, make_storyboard, remake_scene

    home, instance = dagster_home
    defs = _defs(_comfy(unready.url), home)
    store = ArtifactStore(home=str(home))
    create_job(_job("unready"), instance, store)
    make_storyboard("unready", defs, instance, store)
    prompts = unready.counters.prompts
    with pytest.raises(PipelineError) as raised:
        remake_scene("unready", "scene_001", defs, instance, store)
    message = str(raised.value)
    assert "scene_001: GPU worker" in message and "is not ready: missing model sd_xl_base_1.0.safetensors " \
                                                 "(in models/checkpoints)" in message, message
    assert "sparklio worker check" in message and "max_retries" not in message
    assert unready.counters.prompts == prompts, "nothing was sent to the worker"
    saved = json.loads((home / "jobs" / "unready" / "comfy_preflight.json").read_text())
    assert saved["url"] == unready.url and not all(r["present"] for r in saved["rows"])


def test_key_image_fallback_builtin_makes_built_in_images_and_says_why(unready, dagster_home):
    from sparklio_assets.pipeline import create_job, make_storyboard, remake_scene

    home, instance = dagster_home
    defs = _defs(_comfy(unready.url, key_image_fallback="builtin"), home)
    store = ArtifactStore(home=str(home))
    create_job(_job("fallback"), instance, store)
    make_storyboard("fallback", defs, instance, store)
    reports = []
    remake_scene("fallback", "scene_001", defs, instance, store, on_stage=reports.append)
    scene_dir = home / "jobs" / "fallback" / "scenes" / "scene_001"
    key = KeyImageRecord.model_validate_json((scene_dir / "key.json").read_text())
    motion = MotionRecord.model_validate_json((scene_dir / "motion.json").read_text())
    assert key.engine == "builtin" and key.note.startswith("fallback: GPU worker")
    assert "missing model sd_xl_base_1.0.safetensors" in key.note
    assert motion.engine == "kenburns" and "not ready for AnimateDiff" in motion.fallback_reason
    assert reports[0].engines["image"] == "builtin"


# ------------------------------------------------------------------------- deploy/comfyui


DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "comfyui"


def test_models_manifest_covers_every_model_the_graphs_name():
    manifest = {m["file"]: m for m in json.loads((DEPLOY / "models.json").read_text())["models"]}
    needs = [n for n in needs_of(configured_graphs(MODELS)) if n.kind == "model"]
    for need in needs:
        entry = manifest.get(need.name)
        assert entry is not None, f"{need.name} (needed by {need.needed_by}) is not in models.json"
        assert entry["folder"] == need.folder, need.name
        assert entry["needed_by"] and (entry["url"] or entry["note"])
        assert entry["sha256"] is None or len(entry["sha256"]) == 64
    assert {n.name for n in needs} == set(manifest), "no entry the graphs do not use"


def test_pinned_node_packs_are_the_ones_the_graphs_use():
    versions = json.loads((DEPLOY / "versions.json").read_text())
    assert versions["comfyui"]["tag"] == "v0.3.64"
    packs = {p["name"]: p for p in versions["node_packs"]}
    info = json.loads(REFERENCE.read_text())
    used = {n["class_type"] for g in configured_graphs(MODELS).values() for n in g.values()}
    modules = {info[c]["python_module"].split(".", 1)[1] for c in used
               if info[c]["python_module"].startswith("custom_nodes.")}
    assert modules == set(packs), "every pack a graph needs is pinned, and no other"
    assert all(len(p["commit"]) >= 7 for p in packs.values())
    assert "ComfyUI-Advanced-ControlNet" not in packs


def test_setup_script_parses_the_manifest(tmp_path):
    import subprocess

    script = (DEPLOY / "setup.sh").read_text()
    assert subprocess.run(["bash", "-n", str(DEPLOY / "setup.sh")]).returncode == 0
    assert "sha256sum" in script and "models.lock" in script


def test_a_scene_step_waits_out_a_worker_restart(server, dagster_home):
    """Spec 8.2 through Dagster: the worker restarts (2 s here; the client test runs 60 s by hand)
    while the key image runs; the step waits, says why (log + run tag), and finishes."""
    import threading

    from sparklio_assets.pipeline import JOB_TAG, create_job, make_storyboard, remake_scene
    from sparklio_assets.tags import GPU_WAIT_TAG

    home, instance = dagster_home
    defs = _defs(_comfy(server.url, worker_wait_s=60, max_attempts=3), home)
    store = ArtifactStore(home=str(home))
    create_job(_job("restart"), instance, store)
    make_storyboard("restart", defs, instance, store)
    box: dict = {}

    def scene_run() -> None:
        try:
            remake_scene("restart", "scene_001", defs, instance, store, on_stage=lambda r: box.update(report=r))
        except Exception as error:
            box["error"] = error

    server.faults.step_delay = 0.2
    try:
        thread = threading.Thread(target=scene_run)
        thread.start()
        server.wait_running(timeout=120)
        restarts = server.restarts
        server.restart(2.0).join(30)
        server.faults.step_delay = 0.0
        thread.join(180)
    finally:
        server.faults.step_delay = 0.0
    assert "error" not in box, box.get("error")
    assert server.restarts == restarts + 1
    key = KeyImageRecord.model_validate_json((home / "jobs" / "restart" / "scenes" / "scene_001" / "key.json")
                                             .read_text())
    assert key.engine.startswith("comfyui")
    run = instance.get_run_by_id(box["report"].run_id)
    assert run.tags[JOB_TAG] == "restart" and run.tags.get(GPU_WAIT_TAG) == "", "cleared once the worker was back"
    messages = [e.user_message for e in instance.all_logs(run.run_id)]
    assert any("waiting_for_gpu_worker: ComfyUI at" in m and "unreachable" in m for m in messages)
