"""Models, planner, typography, motion and the renderer, checked on real pixels."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from sparklio_assets.image_engine import render_key_image
from sparklio_assets.models import BrandKit, Brief, MotionRecord, Scene, Storyboard, describe_validation_error
from sparklio_assets.motion import affine, pose
from sparklio_assets.overlay import SAFE_AREA, render_overlay
from sparklio_assets.planner import plan_storyboard
from sparklio_assets.render import SceneInput, frames_bgr
from sparklio_assets.typography import font

DATA = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data"
BRIEF = json.loads((DATA / "demo_brief.json").read_text())
BRAND = BrandKit.model_validate_json((DATA / "demo_brand.json").read_text())


@pytest.mark.parametrize("field, value, expected", [
    ("duration", 4, "brief.duration: Input should be greater than or equal to 5"),
    ("channels", ["myspace"], "brief.channels.0: Input should be"),
    ("channels", [], "brief.channels: List should have at least 1 item"),
    ("tone", "Very Warm!", "brief.tone: must be snake_case"),
    ("budget", 5, "brief.budget: Extra inputs are not permitted"),
])
def test_bad_brief_names_field_and_reason(field, value, expected):
    with pytest.raises(ValidationError) as error:
        Brief.model_validate({**BRIEF, field: value})
    assert describe_validation_error(error.value, "brief").startswith(expected)


def test_brand_colours_must_be_hex():
    with pytest.raises(ValidationError) as error:
        BrandKit.model_validate({**BRAND.model_dump(), "colors": ["#12345G"]})
    assert "colors" in describe_validation_error(error.value) and "#RRGGBB" in str(error.value)


def test_storyboard_durations_must_sum():
    plan = plan_storyboard(Brief.model_validate(BRIEF), BRAND).model_dump()
    plan["scenes"][0]["duration_seconds"] += 1
    with pytest.raises(ValidationError, match="durations sum to 16 s but duration_seconds is 15 s"):
        Storyboard.model_validate(plan)


@pytest.mark.parametrize("duration, scenes", [(15, 5), (30, 8), (60, 12), (6, 3)])
def test_planner_five_acts_scaled(duration, scenes):
    plan = plan_storyboard(Brief.model_validate({**BRIEF, "duration": duration}), BRAND)
    assert len(plan.scenes) == scenes
    assert sum(s.duration_seconds for s in plan.scenes) == duration
    assert plan.scenes[0].purpose.startswith("Hook") and plan.scenes[-1].purpose == "CTA"
    assert plan.scenes[-1].onscreen_text == BRAND.cta_default
    assert all(s.image_prompt and s.onscreen_text for s in plan.scenes)


def test_korean_brief_gets_english_image_prompts_and_korean_copy():
    """Image models read English; the copy stays in the brief's language."""
    brief = Brief.model_validate({**BRIEF, "product": "데일리 아이크림", "target_audience": "20-30대 직장인"})
    plan = plan_storyboard(brief, BRAND)
    assert not any(re.search("[\uac00-\ud7a3]", s.image_prompt) for s in plan.scenes), [s.image_prompt for s in plan.scenes]
    assert "office workers in their 20s to 30s" in plan.scenes[0].image_prompt
    assert any("데일리 아이크림" in s.onscreen_text + s.narration for s in plan.scenes)


def test_cta_button_does_not_cover_the_product():
    """The CTA scene's bottle sits between the headline and the button: under the button's box the
    key image is soft background (no label text or bottle edge)."""
    brief = Brief.model_validate(BRIEF)
    scene = plan_storyboard(brief, BRAND).scenes[-1]
    _, placed = render_overlay(scene, BRAND, brief.product, "ko")
    box = placed.cta_box
    key = np.asarray(render_key_image(scene, BRAND, brief.product, seed="cta").convert("L"))
    edges = np.abs(cv2.Laplacian(key[box.top:box.bottom, box.left:box.right], cv2.CV_32F))
    assert edges.max() < 40, f"sharp detail under the CTA button (max Laplacian {edges.max():.0f})"


def _ink(text: str, size: int = 80) -> np.ndarray:
    img = Image.new("L", (1200, 200), 0)
    from PIL import ImageDraw
    ImageDraw.Draw(img).text((10, 10), text, font=font(size), fill=255)
    return np.asarray(img)


def test_hangul_renders_real_glyphs_not_boxes():
    tofu = _ink("\uffff")  # a code point the font lacks draws its .notdef box
    for word in ("눈", "피로", "샘플"):
        glyph = _ink(word[0])
        assert glyph.any(), f"{word[0]} drew nothing"
        assert not np.array_equal(glyph, tofu), f"{word[0]} drew the missing-glyph box"
    assert not np.array_equal(_ink("눈"), _ink("피"))


def test_punctuation_reaches_the_frame_verbatim():
    tricky = "50% 할인: \"오늘\" 'only' C:\\path"
    for char in "%:\"'\\":
        assert _ink(char).any(), f"{char!r} drew nothing"
    # Each character adds ink: nothing was dropped or escaped away.
    assert (_ink(tricky) > 0).sum() > (_ink(tricky.replace("\\", "")) > 0).sum()


def test_long_korean_copy_wraps_inside_the_safe_area():
    scene = Scene(id="scene_001", purpose="Hook / Attention", duration_seconds=3,
                  onscreen_text="피곤한눈을위한하루십초의작은습관이제시작하세요\n두번째 줄: 100%",
                  image_prompt="x", motion_style="slow zoom-in", brand_elements=["logo_bottom_right"])
    layer, layout = render_overlay(scene, BRAND, "Daily Eye Care", "ko")
    assert len(layout.text_boxes) == 1
    for box in layout.all_boxes():
        assert SAFE_AREA.contains(box), box
    alpha = np.asarray(layer.getchannel("A"))
    inside = alpha[SAFE_AREA.top - 20:SAFE_AREA.bottom + 20, SAFE_AREA.left - 20:SAFE_AREA.right + 20]
    assert alpha.sum() - inside.sum() < 0.01 * alpha.sum(), "ink outside the safe area"


@pytest.mark.parametrize("style", ["slow zoom-in", "parallax movement", "rotation + glow effect",
                                   "slide transition", "pulse effect"])
def test_motion_is_smooth_and_never_shows_an_edge(style):
    frames = 72
    mats = np.array([affine(pose(style, i / (frames - 1), 3.0), 1080, 1920) for i in range(frames)])
    corners = np.array([[0, 0, 1], [1080, 0, 1], [0, 1920, 1], [1080, 1920, 1]], float)
    inverse = [np.linalg.inv(np.vstack([m, [0, 0, 1]])) for m in mats]
    for inv in inverse:  # each frame corner maps back inside the source picture
        src = corners @ inv.T
        assert (src[:, 0] >= -0.5).all() and (src[:, 0] <= 1080.5).all()
        assert (src[:, 1] >= -0.5).all() and (src[:, 1] <= 1920.5).all()
    path = np.array([corners[0] @ inv.T for inv in inverse])[:, :2]
    steps = np.diff(path, axis=0)
    assert np.abs(steps).max() < 12, "no jumps between frames"
    assert np.abs(np.diff(steps, axis=0)).max() < 1.5, "sub-pixel, steady motion: no jitter"
    assert np.abs(path[-1] - path[0]).max() > 3 or style == "pulse effect"


def _solid_scene(tmp_path: Path, name: str, bgr: tuple[int, int, int], frames: int, style: str) -> SceneInput:
    img = np.zeros((1920, 1080, 3), np.uint8)
    img[:] = bgr
    img[900:1000, 500:580] = (255, 255, 255)  # a feature for the motion to move
    path = tmp_path / f"{name}.png"
    Image.fromarray(img[:, :, ::-1]).save(path)
    overlay = tmp_path / f"{name}_overlay.png"
    Image.new("RGBA", (1080, 1920), (0, 0, 0, 0)).save(overlay)
    motion = MotionRecord(scene_id=name, engine="kenburns", motion_style=style, duration_seconds=frames / 24,
                          image_path=str(path))
    return SceneInput(frames, motion, overlay)


def test_renderer_length_motion_and_crossfade(tmp_path):
    a = _solid_scene(tmp_path, "scene_001", (0, 0, 200), 48, "slow zoom-in")
    b = _solid_scene(tmp_path, "scene_002", (200, 0, 0), 48, "parallax movement")
    frames = list(frames_bgr([a, b]))
    assert len(frames) == 96
    assert not np.array_equal(frames[0], frames[40]), "motion within a scene"
    mid = frames[48][100, 100].astype(int)  # centre of the 12-frame crossfade
    assert abs(mid[0] - 100) < 15 and abs(mid[2] - 100) < 15, mid
    # Frames are composited in the encoder's YUV 4:2:0, so a pure colour comes back within rounding.
    assert np.abs(frames[30][100, 100].astype(int) - (0, 0, 200)).max() <= 3
    assert np.abs(frames[60][100, 100].astype(int) - (200, 0, 0)).max() <= 3


def test_the_specs_own_storyboard_validates():
    """The example in spec section 3.1, byte for byte, is a valid Storyboard."""
    raw = json.loads((Path(__file__).parent / "data" / "spec_storyboard.json").read_text())
    plan = Storyboard.model_validate(raw)
    assert [s.purpose for s in plan.scenes][0] == "Hook / Attention"
    assert plan.metadata.estimated_cost == "$0.50"
    assert plan.scenes[3].brand_elements == ["certification_badge"]
