"""The ComfyUI client, graph builders and engines, run for real against a local stand-in server
that speaks ComfyUI's protocol (tests/comfy_standin.py): happy paths, faults, and Dagster runs."""

import json
import os
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, MultiPartitionKey, build_asset_context
from PIL import Image

from comfy_graphs import (
    KEY_SIZE,
    MOTION_SIZE,
    animatediff_clip,
    motion_family,
    motion_frames,
    sdxl_key_image,
    seed_of,
    with_controlnet,
    with_ipadapter,
)
from comfy_standin import ComfyStandin
from local_servers import free_port
from resources.artifacts import ArtifactStore
from resources.comfyui import (
    ComfyBusy,
    ComfyCancelStuck,
    ComfyExecutionError,
    ComfyInterrupted,
    ComfyLostJob,
    ComfyModels,
    ComfyTimeout,
    ComfyUIClient,
    ComfyUIResource,
    ComfyUnavailable,
    ComfyValidationError,
    ComfyWorkerDown,
    validate_graph,
)
from resources.ffmpeg import FFmpegRunner
from sparklio_assets import comfy_engines
from sparklio_assets.comfy_engines import make_key_image, make_motion_clip, use_comfy
from sparklio_assets.models import BrandKit, Brief, JobSpec, KeyImageRecord, MotionRecord, Scene

DATA = Path(__file__).resolve().parent / "data"
PRODUCT_DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
OBJECT_INFO = json.loads((DATA / "comfy_object_info.json").read_text())
MODELS = ComfyModels()
CONTROLNET_INSTALLED = {("ControlNetLoader", "control_net_name"): [MODELS.controlnet],
                        ("IPAdapterModelLoader", "ipadapter_file"): ["ip-adapter-plus_sdxl_vit-h.safetensors"]}
BRAND = BrandKit.model_validate_json((PRODUCT_DATA / "demo_brand.json").read_text())
STYLES = list(MODELS.motion_modules)


def scene(**overrides) -> Scene:
    fields = dict(id="scene_001", purpose="Hook / Attention", duration_seconds=3.0, onscreen_text="hi",
                  image_prompt="a jar of eye cream on a marble shelf", motion_style="slow zoom-in",
                  brand_elements=["logo"])
    return Scene(**{**fields, **overrides})


def issues(graph, info=OBJECT_INFO) -> list[str]:
    return [str(i) for i in validate_graph(graph, info)]


class Logs(list):
    def __call__(self, message: str) -> None:
        self.append(message)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ComfyStandin(tmp_path_factory.mktemp("comfy"), extra_models=CONTROLNET_INSTALLED) as standin:
        yield standin


@pytest.fixture(autouse=True)
def no_faults(request):
    if "server" in request.fixturenames:
        standin = request.getfixturevalue("server")
        standin.faults.__init__()
        yield
        standin.faults.__init__()
    else:
        yield


@pytest.fixture
def logs() -> Logs:
    return Logs()


def fast_client(url: str, logs: Logs | None = None, **overrides) -> ComfyUIClient:
    settings = dict(timeout_s=30, backoff_s=0.02, poll_interval_s=0.1, connect_timeout_s=1, read_timeout_s=5,
                    worker_wait_s=5, queue_timeout_s=30, cancel_confirm_s=5, log=logs, models=ComfyModels())
    return ComfyUIClient(url, **{**settings, **overrides})


@pytest.fixture
def client(server, logs):
    with fast_client(server.url, logs) as c:
        yield c


# ------------------------------------------------------------------------ graphs and schemas


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("output, ipadapter", [("mp4", False), ("frames", True)])
def test_animatediff_graphs_validate(style, output, ipadapter):
    g = animatediff_clip("sparklio/key.png", "a jar", style, "job/scene_001", MODELS, frames=25, output=output,
                         ipadapter=ipadapter).build()
    assert issues(g) == []
    module = g[next(k for k, n in g.items() if n["class_type"] == "ADE_LoadAnimateDiffModel")]["inputs"]["model_name"]
    assert module == MODELS.motion_modules[style]
    by_class = {n["class_type"]: n["inputs"] for n in g.values()}
    family = motion_family(module)
    assert by_class["CheckpointLoaderSimple"]["ckpt_name"] == (
        MODELS.motion_checkpoint_sdxl if family == "sdxl" else MODELS.motion_checkpoint_sd15)
    assert (by_class["ImageScale"]["width"], by_class["ImageScale"]["height"]) == MOTION_SIZE[family]
    assert by_class["RepeatImageBatch"]["amount"] == 25
    assert by_class["RIFE VFI"]["multiplier"] == 3
    if output == "mp4":
        assert by_class["VHS_VideoCombine"]["frame_rate"] == 24
        assert by_class["VHS_VideoCombine"]["format"] == "video/h264-mp4"
    else:
        assert "VHS_VideoCombine" not in by_class and "SaveImage" in by_class
    if ipadapter:  # IPAdapter sits on the model before ADE_UseEvolvedSampling
        evolved = by_class["ADE_UseEvolvedSampling"]
        assert g[evolved["model"][0]]["class_type"] == "IPAdapterAdvanced"


def test_key_image_graphs_validate():
    plain = sdxl_key_image("a jar", 7, MODELS).build()
    assert issues(plain) == []
    assert "LoraLoader" not in {n["class_type"] for n in plain.values()}
    lora = sdxl_key_image("a jar", 7, MODELS, lora=MODELS.brand_lora).build()
    assert issues(lora) == []
    by_class = {n["class_type"]: (k, n["inputs"]) for k, n in lora.items()}
    lora_id = by_class["LoraLoader"][0]
    assert by_class["KSampler"][1]["model"] == [lora_id, 0]
    assert all(n["inputs"]["clip"] == [lora_id, 1] for n in lora.values() if n["class_type"] == "CLIPTextEncode")
    latent = by_class["EmptyLatentImage"][1]
    assert (latent["width"], latent["height"]) == KEY_SIZE == (768, 1344)
    sampler = by_class["KSampler"][1]
    assert sampler["seed"] == 7 and sampler["denoise"] == 1.0 and sampler["latent_image"][0] == by_class["EmptyLatentImage"][0]
    styled = with_ipadapter(sdxl_key_image("a jar", 7, MODELS, lora=MODELS.brand_lora), "ref.png", MODELS).build()
    assert issues(styled) == []


def test_controlnet_graph_names_the_missing_model():
    g = with_controlnet(sdxl_key_image("a jar", 7, MODELS, lora=MODELS.brand_lora), "guide.png", MODELS).build()
    # The reference worker has no SDXL ControlNet installed: the check says exactly that.
    assert issues(g) == [f"node 10 (ControlNetLoader) input 'control_net_name': '{MODELS.controlnet}' is not one "
                         "of the server's values: ['v3_sd15_sparsectrl_rgb.ckpt'] [value_not_in_list]"]
    installed = json.loads(json.dumps(OBJECT_INFO))
    installed["ControlNetLoader"]["input"]["required"]["control_net_name"][0].append(MODELS.controlnet)
    assert issues(g, installed) == []


SPEC_AD = {  # the spec's AnimateDiff graph, as the reference reconstructs it
    "1": {"class_type": "LoadImage", "inputs": {"image": "product.png"}},
    "2": {"class_type": "AnimateDiffLoader", "inputs": {"model_name": "mm_sd_v15_v2.ckpt"}},
    "3": {"class_type": "AnimateDiffSampler", "inputs": {"model": ["2", 0], "image": ["1", 0], "frame_count": 24}},
    "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0]}},
}
SPEC_SDXL = {
    "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1],
                                                 "lora_name": "brand_style_sdxl.safetensors",
                                                 "strength_model": 0.8, "strength_clip": 0.8}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a bottle", "clip": ["2", 1]}},
    "4": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "positive": ["3", 0], "steps": 30, "cfg": 6.5,
                                               "sampler_name": "dpmpp_2m_sde_gpu", "scheduler": "karras"}},
    "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0]}},
}


def test_spec_graphs_are_rejected_with_every_reason():
    found = issues(SPEC_AD)
    assert any("node 2 (AnimateDiffLoader)" in i and "does not exist" in i for i in found)
    assert any("node 3 (AnimateDiffSampler)" in i for i in found)
    assert "node 4 (SaveImage) input 'filename_prefix': required input is missing [required_input_missing]" in found
    found = issues(SPEC_SDXL)
    for name in ("seed", "negative", "latent_image", "denoise"):
        assert f"node 4 (KSampler) input '{name}': required input is missing [required_input_missing]" in found
    assert "node 5 (SaveImage) input 'images': received LATENT from node 4 (KSampler) but needs IMAGE " \
           "[return_type_mismatch]" in found


@pytest.mark.parametrize("role, inputs, expected", [
    ("sampler", {"seed": -1}, "input 'seed': value -1 smaller than min of 0 [value_smaller_than_min]"),
    ("sampler", {"sampler_name": "euler_magic"}, "input 'sampler_name': 'euler_magic' is not one of"),
    ("sampler", {"steps": 20.5}, "input 'steps': expects an integer, got 20.5 [invalid_input_type]"),
    ("sampler", {"positive": ["99", 0]}, "input 'positive': links to node '99', which is not in the graph"),
    ("sampler", {"positive": ["3", 4]}, "input 'positive': links to output 4 of node 3 (CLIPTextEncode), which has 1"),
    ("latent", {"width": 8}, "node 5 (EmptyLatentImage) input 'width': value 8 smaller than min of 16"),
    ("checkpoint", {"ckpt_name": "juggernaut_reborn.safetensors"}, "node 1 (CheckpointLoaderSimple) input 'ckpt_name'"),
    ("positive", {"clip": "not a link"}, "input 'clip': expects a link from a CLIP output"),
])
def test_validator_names_node_class_and_input(role, inputs, expected):
    g = sdxl_key_image("a jar", 1, MODELS)
    g.set(role, **inputs)
    found = issues(g.build())
    assert len(found) == 1 and expected in found[0], found


def test_validator_checks_what_the_server_does_not():
    webm = {"1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0}},
            "2": {"class_type": "SaveWEBM", "inputs": {"images": ["1", 0], "filename_prefix": "x", "codec": "bogus",
                                                      "fps": 24.0, "crf": 32.0}}}
    assert issues(webm) == ["node 2 (SaveWEBM) input 'codec': 'bogus' is not one of the server's values: "
                            "['vp9', 'av1'] [value_not_in_list]"]
    g = animatediff_clip("key.png", "p", "slow zoom-in", 1, MODELS)
    g.set("video", pix_fmt="rgb48", crf=200)  # VHS's per-format inputs
    assert {i.split(":")[0] for i in issues(g.build())} == {"node 16 (VHS_VideoCombine) input 'pix_fmt'",
                                                             "node 16 (VHS_VideoCombine) input 'crf'"}
    no_output = {k: v for k, v in sdxl_key_image("a", 1, MODELS).build().items() if v["class_type"] != "SaveImage"}
    assert [i for i in issues(no_output) if "prompt_no_outputs" in i]


def test_user_text_is_data_not_json():
    nasty = 'jar", "clip": ["1", 1]}, "99": {"class_type": "Evil", "inputs": {}} {{x}} \\ \n 한글 ✓'
    g = sdxl_key_image(nasty, "job/scene", MODELS, lora=MODELS.brand_lora).build()
    assert g["3"]["inputs"]["text"] == nasty and "99" not in g
    assert json.loads(json.dumps(g)) == g and issues(g) == []
    assert seed_of("job/scene") == seed_of("job/scene") != seed_of("job/scene2")
    assert seed_of(-5) >= 0 and 0 <= seed_of("x") < 2 ** 64


def test_motion_frames_cover_the_scene():
    assert motion_frames(72) == 25  # 3 s: (25-1)*3+1 = 73 frames at 24 fps
    assert motion_frames(24) == 24  # at least the spec's 24 frames at 8 fps
    assert (motion_frames(240) - 1) * 3 + 1 >= 240


def test_routing():
    on, off = ComfyUIResource(url="http://gpu:8188"), ComfyUIResource()
    assert not use_comfy("draft", on)
    assert use_comfy("standard", on) and use_comfy("premium", on)
    assert not use_comfy("standard", None)
    assert not use_comfy("standard", off) or off.base_url  # env may configure it


def test_url_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("SPARKLIO_COMFYUI_URL", raising=False)
    assert not ComfyUIResource().configured
    monkeypatch.setenv("SPARKLIO_COMFYUI_URL", "http://gpu-worker:8188")
    assert ComfyUIResource().base_url == "http://gpu-worker:8188"
    assert use_comfy("standard", ComfyUIResource()) and not use_comfy("draft", ComfyUIResource())


# ------------------------------------------------------------------------------- happy paths


def test_health_version_and_object_info(client):
    stats = client.system_stats()
    assert stats.version == (0, 3, 64) and client.supports_own_prompt_id
    assert "KSampler" in client.object_info()
    # protocol details the client relies on: `{}` for unknown ids and classes
    assert client._json("GET", "/history/no-such-id") == {}
    assert client._json("GET", "/object_info/NoSuchNode") == {}
    assert client._json("GET", "/object_info/RIFE%20VFI")["RIFE VFI"]["name"] == "RIFE VFI"


def test_upload_uses_the_returned_name(client, server, tmp_path):
    a, b = tmp_path / "product.png", tmp_path / "other" / "product.png"
    b.parent.mkdir()
    Image.new("RGB", (64, 64), "red").save(a)
    Image.new("RGB", (64, 64), "blue").save(b)
    assert client.upload_image(a, subfolder="t", overwrite=False) == "t/product.png"
    assert client.upload_image(a, subfolder="t", overwrite=False) == "t/product.png"  # same bytes: same name
    assert client.upload_image(b, subfolder="t", overwrite=False) == "t/product (1).png"
    with Image.open(server.input_dir / "t" / "product (1).png") as stored:
        assert stored.getpixel((0, 0)) == (0, 0, 255)


def test_key_image_with_brand_lora(client, server, tmp_path):
    out = tmp_path / "key.png"
    record = make_key_image(client, scene(), BRAND, "Eye Cream", seed="job1/scene_001", out_path=out, job_id="job1")
    assert record.engine == "comfyui_lora"
    assert (record.width, record.height) == (1080, 1920)
    with Image.open(out) as img:
        assert img.size == (1080, 1920) and img.mode == "RGB"
        assert np.asarray(img).std() > 5, "a real picture, not a flat fill"
    prompt_id = record.note.split(",")[0].split()[-1]
    sent = server.counters.received[prompt_id]
    by_class = {n["class_type"]: n["inputs"] for n in sent.values()}
    assert by_class["LoraLoader"]["lora_name"] == MODELS.brand_lora
    assert by_class["KSampler"]["seed"] == seed_of("job1/scene_001")
    assert scene().image_prompt in by_class["CLIPTextEncode"]["text"] or any(
        scene().image_prompt in n["inputs"]["text"] for n in sent.values() if n["class_type"] == "CLIPTextEncode")
    assert by_class["SaveImage"]["filename_prefix"] == "sparklio/job1/scene_001_key"


def test_key_image_without_brand_elements_is_plain_sdxl(client, tmp_path):
    record = make_key_image(client, scene(brand_elements=[]), BRAND, "Eye Cream", 1, tmp_path / "k.png")
    assert record.engine == "comfyui_sdxl"


def test_controlnet_product_shot_uploads_its_guide(client, server, tmp_path):
    s = scene(id="scene_003", purpose="Solution", brand_elements=["product_3d", "logo"])
    before = len(server.counters.uploads)
    record = make_key_image(client, s, BRAND, "Eye Cream", 3, tmp_path / "k.png", job_id="j")
    assert record.engine == "comfyui_controlnet"
    uploaded = server.counters.uploads[before:]
    assert len(uploaded) == 1 and uploaded[0].startswith("sparklio/j_scene_003_guide-")
    sent = server.counters.received[record.note.split(",")[0].split()[-1]]
    load = [n["inputs"]["image"] for n in sent.values() if n["class_type"] == "LoadImage"]
    assert load == uploaded  # the server's returned name is what LoadImage gets


def test_missing_optional_models_are_skipped_with_a_note(tmp_path, logs):
    with ComfyStandin(tmp_path / "bare") as bare, fast_client(bare.url, logs) as c:
        c.models = ComfyModels(brand_lora="not_installed.safetensors")
        s = scene(brand_elements=["product_3d"])
        record = make_key_image(c, s, BRAND, "Eye Cream", 3, tmp_path / "k.png")
    assert record.engine == "comfyui_sdxl"
    assert "brand LoRA not_installed.safetensors is not installed" in record.note
    assert f"ControlNet {MODELS.controlnet} is not installed" in record.note


def test_premium_style_reference_goes_through_ipadapter(client, server, tmp_path):
    reference = tmp_path / "first.png"
    Image.new("RGB", (1080, 1920), (200, 30, 30)).save(reference)
    record = make_key_image(client, scene(id="scene_002", brand_elements=[]), BRAND, "Eye Cream", 9,
                            tmp_path / "k.png", quality="premium", style_reference=reference)
    sent = server.counters.received[record.note.split(",")[0].split()[-1]]
    classes = [n["class_type"] for n in sent.values()]
    assert "IPAdapterAdvanced" in classes and "IPAdapterUnifiedLoader" in classes
    assert next(n for n in sent.values() if n["class_type"] == "KSampler")["inputs"]["steps"] == MODELS.steps + 10


@pytest.mark.parametrize("style", ["slow zoom-in", "parallax movement"])
def test_motion_clip(client, server, tmp_path, style):
    key = tmp_path / "key.png"
    Image.effect_mandelbrot((1080, 1920), (-2, -1.5, 1, 1.5), 60).convert("RGB").save(key)
    s = scene(motion_style=style, duration_seconds=3.0)
    record = make_motion_clip(client, s, key, tmp_path / "clip.mp4", seed="j/scene_001/motion", job_id="j")
    assert isinstance(record, MotionRecord)
    assert record.engine == "animatediff" and record.clip_path == str(tmp_path / "clip.mp4")
    assert record.fallback_reason is None and record.image_path == str(key)
    with av.open(record.clip_path) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert stream.average_rate == 24
    n = motion_frames(s.frames)
    assert len(frames) == (n - 1) * 3 + 1 >= s.frames
    assert (frames[0].shape[1], frames[0].shape[0]) == MOTION_SIZE[motion_family(MODELS.motion_modules[style])]
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).mean() > 2, "the clip moves"


def test_frames_output_is_encoded_to_mp4(client, server, tmp_path):
    key = tmp_path / "key.png"
    Image.new("RGB", (1080, 1920), (20, 120, 200)).save(key)
    g = animatediff_clip("key.png", "p", "parallax movement", 2, MODELS, frames=8, output="frames")
    result = client.run(g.build(), tmp_path / "dl", uploads={g.id("key_image"): key})
    assert len(result.by_kind("images")) == 22 and not result.by_kind("gifs")
    comfy_engines._store_clip(result, tmp_path / "clip.mp4")
    assert comfy_engines._count_frames(tmp_path / "clip.mp4") == 22


# ------------------------------------------------------------------------------------ faults


def test_server_down_is_waited_for_then_named(tmp_path, logs):
    port = free_port()
    reasons = []
    started = time.monotonic()
    with fast_client(f"http://127.0.0.1:{port}", logs, worker_wait_s=0.5, on_wait=reasons.append) as c:
        with pytest.raises(ComfyWorkerDown, match=rf"GPU worker at http://127.0.0.1:{port} unreachable for \d+ s "
                                                  r"\(worker_wait_s 0.5\); last error: .*unreachable \(ConnectError"):
            c.run(sdxl_key_image("a", 1, MODELS).build(), tmp_path)
    waits = [m for m in logs if "waiting for the GPU worker" in m]
    assert len(waits) >= 2 and "giving up after 0.5 s" in waits[0]
    assert reasons and all(f"127.0.0.1:{port} unreachable" in r for r in reasons)
    assert time.monotonic() - started < 10


def test_http_500_is_transient(client, server, tmp_path, logs):
    server.faults.http_500 = 1
    result = client.run(sdxl_key_image("a", 11, MODELS).build(), tmp_path)
    assert result.attempts == 2 and result.by_kind("images")
    assert "HTTP 500" in logs[0]


def test_server_400_is_final_and_names_node_and_input(client, server, tmp_path):
    g = animatediff_clip("never_uploaded.png", "p", "slow zoom-in", 1, MODELS)  # only the server can know
    before = server.counters.prompts
    with pytest.raises(ComfyValidationError) as raised:
        client.run(g.build(), tmp_path)
    assert server.counters.prompts - before == 1, "a 400 is never retried"
    message = str(raised.value)
    assert "HTTP 400" in message
    assert "node 2 (LoadImage) input 'image': Custom validation failed for node: image - Invalid image file: " \
           "never_uploaded.png [custom_validation_failed]" in message


def test_server_400_shapes_are_parsed(client, server):
    g = sdxl_key_image("a", 1, MODELS)
    g.set("sampler", seed=-1)
    with pytest.raises(ComfyValidationError) as raised:
        client.submit(g.build(), "cid", validate=False)
    [issue] = raised.value.issues
    assert (issue.node_id, issue.class_type, issue.input_name, issue.type) == ("6", "KSampler", "seed",
                                                                                "value_smaller_than_min")
    with pytest.raises(ComfyValidationError, match=r"node 2: Cannot execute because node AnimateDiffLoader does not exist.*invalid_prompt"):
        client.submit(SPEC_AD, "cid", validate=False)


def test_partially_valid_prompt_is_an_error_and_cancelled(client, server, tmp_path):
    g = sdxl_key_image("a", 5, MODELS).build()
    g["20"] = {"class_type": "LoadImage", "inputs": {"image": "missing.png"}}
    g["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0], "filename_prefix": "x"}}
    server.faults.step_delay = 0.2
    before = (server.counters.interrupts, server.counters.deletes)
    with pytest.raises(ComfyValidationError, match="accepted partially, cancelled") as raised:
        client.submit(g, "cid")
    assert [(i.node_id, i.type) for i in raised.value.issues] == [("20", "custom_validation_failed")]
    assert (server.counters.interrupts, server.counters.deletes) != before, "the valid half was cancelled"


def test_execution_error_is_final(client, server, tmp_path):
    server.faults.fail_class = "VAEDecode"
    server.faults.fail_message = "CUDA out of memory. Tried to allocate 2.00 GiB"
    before = server.counters.prompts
    with pytest.raises(ComfyExecutionError, match=r"failed at node 7 \(VAEDecode\): RuntimeError: CUDA out of memory") as e:
        client.run(sdxl_key_image("a", 12, MODELS).build(), tmp_path)
    assert (e.value.node_id, e.value.node_type) == ("7", "VAEDecode")
    assert server.counters.prompts - before == 1


def test_dropped_websocket_falls_back_to_history(client, server, tmp_path, logs):
    server.faults.drop_ws = True
    server.faults.step_delay = 0.05
    result = client.run(sdxl_key_image("a", 13, MODELS).build(), tmp_path)
    assert result.by_kind("images") and result.attempts == 1
    assert any("websocket dropped" in m and "polling /history" in m for m in logs)


def test_websocket_unavailable_still_works_by_polling(client, tmp_path, logs, monkeypatch):
    import websockets.sync.client

    def refuse(*args, **kwargs):
        raise ConnectionRefusedError("proxy ate the upgrade")

    monkeypatch.setattr(websockets.sync.client, "connect", refuse)
    result = client.run(sdxl_key_image("a", 14, MODELS).build(), tmp_path)
    assert result.by_kind("images")
    assert any("websocket not available" in m and "polling /history only" in m for m in logs)


def test_lost_prompt_is_retried(client, server, tmp_path, logs):
    server.faults.lose_next = 1
    before = server.counters.prompts
    result = client.run(sdxl_key_image("a", 15, MODELS).build(), tmp_path)
    assert result.attempts == 2 and server.counters.prompts - before == 2
    assert any("neither the queue nor the history" in m for m in logs)


def test_lost_prompt_gives_up_after_three_attempts(client, server, tmp_path):
    server.faults.lose_next = 3
    with pytest.raises(ComfyLostJob, match="neither the queue nor the history.*gave up after the worker lost it 3 times"):
        client.run(sdxl_key_image("a", 16, MODELS).build(), tmp_path)


def _run_in_thread(client, graph, out):
    box = {}

    def target():
        try:
            box["result"] = client.run(graph, out)
        except Exception as error:
            box["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    return thread, box


def test_interrupt_a_running_job(server, tmp_path):
    server.faults.step_delay = 0.3
    with fast_client(server.url) as runner, fast_client(server.url) as other:
        thread, box = _run_in_thread(runner, sdxl_key_image("a", 17, MODELS).build(), tmp_path)
        prompt_id = server.wait_running()
        assert other.cancel(prompt_id) == "interrupted"
        thread.join(10)
    assert isinstance(box.get("error"), ComfyInterrupted), box
    history = server.history_of(prompt_id)
    assert history["status"]["status_str"] == "error" and not history["status"]["completed"]
    assert history["status"]["messages"][-1][0] == "execution_interrupted"


def test_cancel_a_pending_job(server, tmp_path):
    server.faults.step_delay = 0.2
    with fast_client(server.url) as c:
        first = c.submit(sdxl_key_image("a", 18, MODELS).build(), "c1")
        second = c.submit(sdxl_key_image("a", 19, MODELS).build(), "c2")
        server.wait_running()
        assert c.cancel(second) == "deleted"
        assert second not in set().union(*c.queue_ids())
        assert c.cancel(first) == "interrupted"
        time.sleep(0.5)
        assert c.history(second) is None  # a deleted pending job never reaches the history


def test_deadline_cancels_the_job(server, tmp_path):
    server.faults.step_delay = 0.4
    interrupts = server.counters.interrupts
    with fast_client(server.url, timeout_s=0.6) as c:
        with pytest.raises(ComfyTimeout, match=r"longer than its deadline of 0.6 s \(the worker is up\); "
                                               r"cancel: interrupted; left the queue after") as raised:
            c.run(sdxl_key_image("a", 20, MODELS).build(), tmp_path)
        assert "unreachable" not in str(raised.value) and "unavailable" not in str(raised.value)
        prompt_id = str(raised.value).split()[2]
        assert prompt_id not in set().union(*c.queue_ids())
    assert server.counters.interrupts >= interrupts + 1


def test_busy_worker_is_busy_not_down(server, tmp_path):
    foreign = server.occupy(5.0)
    try:
        with fast_client(server.url, queue_timeout_s=0.5, timeout_s=0.2) as c:
            with pytest.raises(ComfyBusy, match=r"is up but busy: job \S+ waited \d+ s behind 1 other job\(s\) "
                                                r"without starting .*cancel: deleted; left the queue") as raised:
                c.run(sdxl_key_image("a", 22, MODELS).build(), tmp_path)
            running, pending = c.queue_ids()
            assert running == {foreign} and not pending, "our job left the queue, the other one runs on"
        assert not isinstance(raised.value, (ComfyTimeout, ComfyUnavailable))
    finally:
        with fast_client(server.url) as c:
            c.cancel_and_confirm(foreign)


def test_deadline_counts_from_when_the_job_runs(server, tmp_path):
    server.occupy(4.0)  # longer than the deadline: only the job's own running time counts
    with fast_client(server.url, timeout_s=3.0) as c:
        result = c.run(sdxl_key_image("a", 23, MODELS, size=(64, 64)).build(), tmp_path)
    assert result.by_kind("images") and result.seconds > 3.0, "it took longer than its deadline, queue included"


def test_cancel_waits_until_a_slow_interrupt_took(server, tmp_path):
    server.faults.step_delay = 0.3
    server.faults.interrupt_delay = 1.0  # the server stops the job only a second later
    with fast_client(server.url) as c:
        prompt_id = c.submit(sdxl_key_image("a", 24, MODELS).build(), "c1")
        server.wait_running()
        outcome = c.cancel_and_confirm(prompt_id)
        assert prompt_id not in set().union(*c.queue_ids()), "returned only once the prompt left the queue"
    waited = float(outcome.rsplit("after ", 1)[1].split(" s")[0])
    assert outcome.startswith("interrupted") and waited >= 0.9


def test_cancel_escalates_when_the_targeted_interrupt_is_ignored(server):
    server.faults.step_delay = 0.3
    server.faults.ignore_targeted_interrupts = True
    with fast_client(server.url) as c:
        prompt_id = c.submit(sdxl_key_image("a", 25, MODELS).build(), "c1")
        server.wait_running()
        outcome = c.cancel_and_confirm(prompt_id)
        assert "interrupted globally" in outcome and prompt_id not in set().union(*c.queue_ids())
    assert server.history_of(prompt_id)["status"]["messages"][-1][0] == "execution_interrupted"


def test_a_cancel_that_does_not_take_is_an_error_not_a_retry(server, tmp_path):
    server.faults.step_delay = 0.5
    server.faults.interrupt_delay = 3.0
    server.faults.ignore_targeted_interrupts = True
    with fast_client(server.url, timeout_s=0.3, cancel_confirm_s=0.8) as c:
        before = server.counters.prompts
        with pytest.raises(ComfyCancelStuck, match=r"still running on .* 0.8 s after it was cancelled"):
            c.run(sdxl_key_image("a", 26, MODELS).build(), tmp_path)
        assert server.counters.prompts == before + 1, "nothing was queued behind the stuck prompt"
        c.cancel_and_confirm(server.wait_running(), within_s=10)


def test_a_blip_follows_the_same_prompt_instead_of_queueing_a_second(server, tmp_path, logs):
    server.faults.step_delay = 0.15
    before = server.counters.prompts
    with fast_client(server.url, logs) as c:
        thread, box = _run_in_thread(c, sdxl_key_image("a", 27, MODELS).build(), tmp_path)
        server.wait_running()
        server.faults.http_500 = 3  # the worker answers 500 for a moment while the job runs on
        thread.join(30)
    assert box.get("result") is not None, box
    assert server.counters.prompts - before == 1
    assert any("still on the worker; following it instead of resubmitting" in m for m in logs)


RESTART_S = float(os.environ.get("SPARKLIO_TEST_RESTART_S", "2"))  # 60 for the manual check


def test_a_worker_restart_mid_job_is_waited_out(server, tmp_path, logs):
    """A restart of RESTART_S seconds (2 in CI; `SPARKLIO_TEST_RESTART_S=60` for the real length)
    while the job runs: the job is lost, the worker is waited for, the job submitted again."""
    server.faults.step_delay = 0.2
    reasons: list[str] = []
    restarts = server.restarts
    with fast_client(server.url, logs, worker_wait_s=RESTART_S * 3 + 30, on_wait=reasons.append,
                     backoff_s=0.5) as c:
        thread, box = _run_in_thread(c, sdxl_key_image("a", 28, MODELS).build(), tmp_path)
        server.wait_running()
        restarted = server.restart(RESTART_S)
        thread.join(RESTART_S * 3 + 60)
        restarted.join(5)
    assert box.get("result") is not None, box
    assert server.restarts == restarts + 1 and box["result"].by_kind("images")
    assert box["result"].seconds >= RESTART_S
    assert any("unreachable" in r for r in reasons) and reasons[-1] == "", "told while waiting, cleared once back"
    assert any("waiting for the GPU worker" in m for m in logs)


def test_old_server_assigns_its_own_prompt_id(tmp_path):
    with ComfyStandin(tmp_path / "old", version="0.3.30") as old, fast_client(old.url) as c:
        result = c.run(sdxl_key_image("a", 21, MODELS).build(), tmp_path / "out")
        assert not c.supports_own_prompt_id and result.prompt_id in old.counters.received


# ------------------------------------------------------------------------ through Dagster


def _defs(comfy: ComfyUIResource, home: Path) -> Definitions:
    """The product's assets and jobs with its own resources, except: this home, a fast encoder,
    and the given ComfyUI (no sensors, schedules or checks: not what these tests are about)."""
    from sparklio_assets.assets import final_video, scene_key_image, scene_motion_clip, soundtrack, storyboard
    from sparklio_assets.definitions import defs, final_video_job, scene_job, storyboard_job

    resources = {**defs.resources, "store": ArtifactStore(home=str(home)), "ffmpeg": FFmpegRunner(preset="ultrafast"),
                 "comfy": comfy}
    return Definitions(assets=[storyboard, scene_key_image, scene_motion_clip, soundtrack, final_video],
                       jobs=[storyboard_job, scene_job, final_video_job], resources=resources)


@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    from sparklio_assets.pipeline import ensure_dagster_home

    monkeypatch.setenv("SPARKLIO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("SPARKLIO_COMFYUI_URL", raising=False)
    ensure_dagster_home(tmp_path / "home")
    with DagsterInstance.get() as instance:
        yield tmp_path / "home", instance


def _job(job_id: str, quality: str) -> JobSpec:
    brief = json.loads((PRODUCT_DATA / "demo_brief.json").read_text())
    return JobSpec(job_id=job_id, brief=Brief(**{**brief, "duration": 5}), brand=BRAND, quality=quality)


def _comfy(url: str, **overrides) -> ComfyUIResource:
    settings = dict(url=url, backoff_s=0.02, poll_interval_s=0.1, timeout_s=60, motion_timeout_s=60,
                    connect_timeout_s=1, worker_wait_s=5, cancel_confirm_s=5, queue_timeout_s=60)
    return ComfyUIResource(**{**settings, **overrides})


def test_standard_quality_run_uses_comfyui(server, dagster_home):
    from sparklio_assets.pipeline import create_job, run_job

    home, instance = dagster_home
    defs = _defs(_comfy(server.url), home)
    store = ArtifactStore(home=str(home))
    create_job(_job("comfy-standard", "standard"), instance, store)
    reports = []
    record = run_job("comfy-standard", defs, instance, store, on_stage=reports.append)
    job_dir = home / "jobs" / "comfy-standard"
    engines = {}
    for scene_dir in sorted((job_dir / "scenes").iterdir()):
        key = KeyImageRecord.model_validate_json((scene_dir / "key.json").read_text())
        motion = MotionRecord.model_validate_json((scene_dir / "motion.json").read_text())
        engines[scene_dir.name] = (key.engine, motion.engine)
        assert key.engine.startswith("comfyui") and (key.width, key.height) == (1080, 1920)
        assert motion.engine == "animatediff" and motion.fallback_reason is None
        assert Path(motion.clip_path) == scene_dir / "clip.mp4" and comfy_engines._count_frames(scene_dir / "clip.mp4") >= 24
    assert engines["scene_002"][0] == "comfyui_controlnet"  # the product_3d scene (spec 3.2)
    assert record.resolution == "1080x1920" and record.fps == 24 and abs(record.duration - 5) < 0.05
    assert record.engines["scene_001.image"] == "comfyui_lora" and record.engines["scene_001.motion"] == "animatediff"
    # The ad shows the generated clip: scene_001's frames move between its first and last frame.
    with av.open(record.video_path) as container:
        frames = [f.to_ndarray(format="rgb24") for i, f in zip(range(30), container.decode(video=0))]
    assert np.abs(frames[0][200:1200].astype(int) - frames[29][200:1200].astype(int)).mean() > 1
    materialization = instance.get_latest_materialization_event(AssetKey("scene_key_image"))
    assert materialization.asset_materialization.metadata["engine"].value.startswith("comfyui")


def test_animatediff_failure_falls_back_to_ken_burns(server, dagster_home):
    from sparklio_assets.pipeline import create_job, make_storyboard, remake_scene

    home, instance = dagster_home
    # A real misconfiguration that ComfyUI only catches at execution: an SDXL motion module on an
    # SD1.5 checkpoint ("Motion module ... is intended for SDXL models").
    defs = _defs(_comfy(server.url, motion_checkpoint_sdxl="sd15_base.safetensors"), home)
    store = ArtifactStore(home=str(home))
    create_job(_job("comfy-fallback", "standard"), instance, store)
    make_storyboard("comfy-fallback", defs, instance, store)
    reports = []
    remake_scene("comfy-fallback", "scene_001", defs, instance, store, on_stage=reports.append)
    scene_dir = home / "jobs" / "comfy-fallback" / "scenes" / "scene_001"
    motion = MotionRecord.model_validate_json((scene_dir / "motion.json").read_text())
    key = KeyImageRecord.model_validate_json((scene_dir / "key.json").read_text())
    assert key.engine == "comfyui_lora"
    assert motion.engine == "kenburns" and motion.clip_path is None
    assert "AnimateDiff failed" in motion.fallback_reason and "intended for SDXL models" in motion.fallback_reason
    assert "node" in motion.fallback_reason and "ADE_UseEvolvedSampling" in motion.fallback_reason
    assert "fallback: AnimateDiff failed" in reports[0].engines["motion"]
    event = instance.get_latest_materialization_event(AssetKey("scene_motion_clip"))
    metadata = event.asset_materialization.metadata
    assert metadata["engine"].value == "kenburns" and "intended for SDXL" in metadata["fallback_reason"].value


def test_draft_never_calls_comfyui_even_when_it_is_down(dagster_home):
    from sparklio_assets.pipeline import create_job, make_storyboard, remake_scene

    home, instance = dagster_home
    defs = _defs(_comfy(f"http://127.0.0.1:{free_port()}"), home)
    store = ArtifactStore(home=str(home))
    create_job(_job("draft-offline", "draft"), instance, store)
    make_storyboard("draft-offline", defs, instance, store)
    reports = []
    remake_scene("draft-offline", "scene_003", defs, instance, store, on_stage=reports.append)
    assert reports[0].engines == {"image": "builtin", "motion": "kenburns"}


def test_unreachable_worker_fails_with_the_root_cause(tmp_path):
    from dagster import Failure

    from sparklio_assets import store_paths as layout
    from sparklio_assets.assets import scene_key_image
    from sparklio_assets.files import write_model
    from sparklio_assets.planner import plan_storyboard

    store = ArtifactStore(home=str(tmp_path))
    spec = _job("down-job", "standard")
    write_model(layout.job_path(store, spec.job_id), spec)
    write_model(layout.storyboard_path(store, spec.job_id), plan_storyboard(spec.brief, spec.brand_kit))
    port = free_port()
    comfy = _comfy(f"http://127.0.0.1:{port}", worker_wait_s=0.3)
    context = build_asset_context(partition_key=MultiPartitionKey({"job": "down-job", "scene": "scene_001"}),
                                  resources={"store": store, "comfy": comfy})
    with pytest.raises(Failure) as raised:
        scene_key_image(context)
    description = raised.value.description
    assert description.startswith("GPU worker preflight: ComfyWorkerDown: GPU worker at "
                                  f"http://127.0.0.1:{port} unreachable for"), description
    assert "last error" in description and "ConnectError" in description
    assert raised.value.allow_retries is False, "the client already waited: no blind step retries"
    assert not layout.key_image_record_path(store, "down-job", "scene_001").exists()
