"""Brand kits with real files (logo, packshots, fonts), the colour roles and copy fitting, checked on
real pixels: the packshot is found by feature matching, the logo by template matching, no ink
leaves the safe area, the primary colour fills the frame, and no internal label is drawn."""

import json
import shutil
from importlib.util import find_spec
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageDraw
from pydantic import ValidationError

from sparklio_assets.brand_assets import load_logo, load_packshot
from sparklio_assets.checks import block_contrast, placed_product_correlation, product_match
from sparklio_assets.colour_roles import assign_roles, contrast, hex_rgb
from sparklio_assets.composition import layout_scene, shows_product
from sparklio_assets.copy_fit import fit_copy
from sparklio_assets.geometry import SAFE_AREA
from sparklio_assets.image_engine import render_key_image
from sparklio_assets.language import language_of
from sparklio_assets.models import PURPOSES, BrandKit, Brief, JobSpec, describe_validation_error
from sparklio_assets.overlay import render_overlay
from sparklio_assets.planner import plan_storyboard
from sparklio_assets.typography import face, font

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "sparklio_assets" / "data"
BRANDS = Path(__file__).parent / "data" / "brands"
LONG_KO_CTA = "지금 한빛뱅크 앱에서 3분 만에 비대면 계좌를 개설하세요"  # 34 characters


def _kit(name: str) -> tuple[BrandKit, Brief]:
    folder = BRANDS / name
    return BrandKit.from_file(folder / "brand.json"), Brief.model_validate_json((folder / "brief.json").read_text())


def _frames(brand: BrandKit, brief: Brief, duration: int | None = None):
    """(scene, composited RGB frame as the viewer sees it at rest, overlay layout) per scene."""
    if duration:
        brief = brief.model_copy(update={"duration": duration})
    plan = plan_storyboard(brief, brand)
    for scene in plan.scenes:
        key = render_key_image(scene, brand, brief.product, seed=scene.id)
        layer, placed = render_overlay(scene, brand, brief.product, language_of(brief), backdrop=key)
        yield scene, np.asarray(Image.alpha_composite(key.convert("RGBA"), layer).convert("RGB")), placed, layer


@pytest.fixture(scope="module")
def shoe():
    brand, brief = _kit("shoe")
    return brand, brief, list(_frames(brand, brief, duration=15))


@pytest.fixture(scope="module")
def bank():
    brand, brief = _kit("bank")
    return brand, brief, list(_frames(brand, brief, duration=15))


# ---------------------------------------------------------------- the kit and its validation


def test_paths_are_relative_to_the_brand_json_and_the_old_kit_still_works():
    brand, _ = _kit("shoe")
    assert Path(brand.logo) == (BRANDS / "shoe" / "logo.png").resolve()
    assert Path(brand.product_images[0].path) == (BRANDS / "shoe" / "shoe.jpg").resolve()
    old = BrandKit.model_validate_json((DATA / "demo_brand.json").read_text())
    assert old.logo is None and old.product_images == [] and old.legal_text == ""
    demo = BrandKit.from_file(DATA / "demo_kit" / "brand.json")
    assert Path(demo.logo).is_file() and demo.website and demo.legal_text


def _error(tmp_path: Path, **changes) -> str:
    kit = {**json.loads((BRANDS / "shoe" / "brand.json").read_text()), **changes}
    for name in ("logo.png", "shoe.jpg"):
        shutil.copy(BRANDS / "shoe" / name, tmp_path / name)
    (tmp_path / "brand.json").write_text(json.dumps(kit))
    with pytest.raises(ValidationError) as error:
        BrandKit.from_file(tmp_path / "brand.json")
    return describe_validation_error(error.value, "brand")


def test_validation_names_the_field_and_the_reason(tmp_path):
    assert _error(tmp_path, logo="nope.png").startswith("brand.logo: file not found")
    (tmp_path / "fake.png").write_text("this is text, named .png")
    assert _error(tmp_path, logo="fake.png").startswith("brand.logo: not an image: fake.png")
    assert _error(tmp_path, product_images=["fake.png"]).startswith("brand.product_images.0.path: not an image")
    Image.new("1", (9000, 6000)).save(tmp_path / "bomb.png")  # 54 MP in a few kB
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    message = _error(tmp_path, product_images=["bomb.png"])
    assert message.startswith("brand.product_images.0.path: too large: bomb.png is 9000x6000") and "pixels" in message
    assert _error(tmp_path, fonts={"headline": "shoe.jpg"}).startswith("brand.fonts.headline: not a font")
    (tmp_path / "evil.svg").write_text('<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a "aaaa">]>'
                                       '<svg xmlns="http://www.w3.org/2000/svg">&a;</svg>')
    assert "DOCTYPE/ENTITY" in _error(tmp_path, logo="evil.svg")


def test_a_korean_ad_refuses_a_brand_font_without_hangul():
    latin = Path(find_spec("matplotlib").submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    brand, brief = _kit("bank")
    kit = brand.model_copy(update={"fonts": brand.fonts.model_copy(update={"headline": str(latin)})})
    with pytest.raises(ValidationError) as error:
        JobSpec(brief=brief, brand=kit)
    assert "brand.fonts.headline: no Hangul glyphs in DejaVuSans.ttf" in describe_validation_error(error.value, "job")
    english = Brief.model_validate_json((BRANDS / "shoe" / "brief.json").read_text())
    JobSpec(brief=english, brand=kit)  # an English ad may use a Latin-only font


def test_brand_font_falls_back_glyph_by_glyph():
    latin = Path(find_spec("matplotlib").submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    fc = face(60, "extrabold", str(latin))
    runs = fc.runs("Sale 50% 할인")
    assert [r for r, f in runs if f is fc.main] == ["Sale 50% "] and [r for r, f in runs if f is fc.fallback] == ["할인"]
    img = Image.new("L", (600, 120), 0)
    fc.draw(ImageDraw.Draw(img), (10, 10), "할", 255)
    tofu = Image.new("L", (600, 120), 0)
    ImageDraw.Draw(tofu).text((10, 10), "할", font=fc.main, fill=255)  # what DejaVu alone would draw
    assert np.asarray(img).any() and not np.array_equal(np.asarray(img), np.asarray(tofu))


def test_accented_latin_draws_from_the_latin_fallback_not_as_boxes():
    """NanumGothic has no Ö, õ or Ā: they come from DejaVu Sans, glyph by glyph, and a brief
    naming such a product is accepted (only what no packaged font has is refused)."""
    from sparklio_assets.typography import cmap, latin_font_path, undrawable

    fc = face(60)
    runs = fc.runs("Björk Ölmühle 수분크림 Āõ")
    latin = [r for r, f in runs if f is fc.fonts[1]]
    assert "".join(latin) == "ÖĀõ" and all(ord(c) in cmap(str(latin_font_path())) for c in "".join(latin))
    assert undrawable("Björk Ölmühle Āõ 수분크림") == []
    brief = Brief.model_validate_json((BRANDS / "shoe" / "brief.json").read_text())
    assert Brief.model_validate({**brief.model_dump(), "product": "Björk Ölmühle"}).product == "Björk Ölmühle"


def test_svg_logo_is_rasterised_without_its_script():
    brand, _ = _kit("bank")
    logo = load_logo(brand.logo)
    alpha = np.asarray(logo.getchannel("A"))
    assert logo.width > 300 and (alpha > 200).mean() > 0.1
    blue = np.asarray(logo.convert("RGB"))[alpha > 200]
    assert (np.abs(blue.astype(int) - hex_rgb("#0052CC")).max(axis=1) < 10).mean() > 0.2


def test_a_photo_on_white_is_cut_out_with_a_soft_edge():
    brand, _ = _kit("shoe")
    shot = load_packshot(brand.product_images[0].path)
    alpha = np.asarray(shot.image.getchannel("A"))
    assert not shot.screen
    assert alpha[0, 0] < 10 and alpha[0, -1] < 10, "the white background is gone"
    h, w = alpha.shape
    assert alpha[int(h * 0.45), int(w * 0.5)] > 245, "the shoe itself is opaque"
    soft = ((alpha > 20) & (alpha < 235)).sum()
    assert soft > 0.002 * alpha.size, "a feathered edge, not a hard cut"


# ---------------------------------------------------------------- copy fitting and colour roles


@pytest.mark.parametrize("text", [LONG_KO_CTA, '50% 할인: "오늘만" \'only\' C:\\path\\to — 지금 바로 확인하세요!',
                                  "Unbelievably comfortable cushioning for every single kilometre you run"])
def test_copy_fits_its_box_wrapping_at_word_boundaries(text):
    width, height = 700, 160
    fitted = fit_copy(text, width, height, 62, 34, max_lines=2)
    assert len(fitted.lines) <= 2 and fitted.height <= height
    assert all(fitted.face.length(line) <= width for line in fitted.lines)
    if not fitted.shortened:
        assert "".join(fitted.text.split()) == "".join(text.split()), "every character kept, verbatim"
    if text.isascii():
        words = set(text.split())
        assert all(word in words for line in fitted.lines for word in line.rstrip("…").split()), fitted.lines


@pytest.mark.parametrize(("text", "width"), [("Daily Eye Care Moisturizer", 450), ("Running on empty?", 400),
                                              ("Meet Stride Volt Running Shoe", 420)])
def test_a_narrow_box_shrinks_the_copy_before_splitting_a_word(text, width):
    """Seen in a narrow column: 'Moisturi / zer', 'Runni / ng on'. Balancing the lines must not go
    narrower than the widest word, and a size at which a word is wider than the box is passed over."""
    fitted = fit_copy(text, width, 600, 104, 52)
    assert [w for line in fitted.lines for w in line.split()] == text.split(), fitted.lines
    assert fitted.face.size > 52


def test_copy_shortens_only_at_a_word_boundary_past_the_floor():
    text = "Unbelievably comfortable cushioning for every single kilometre you run this season and next"
    fitted = fit_copy(text, 400, 60, 60, 40, max_lines=1)
    assert fitted.shortened and fitted.lines[0].endswith("…") and fitted.face.size == 40
    assert text.startswith(fitted.lines[0].rstrip("…")) and text[len(fitted.lines[0]) - 1] == " "


def test_three_colours_each_get_a_role_with_readable_text():
    roles = assign_roles(["#FF5A1F", "#1A1A1A", "#F5F5F5"])
    assert roles.primary == (255, 90, 31) and roles.dark == (26, 26, 26) and roles.light == (245, 245, 245)
    for surface in ("primary", "light", "dark"):
        scheme = roles.scheme(surface)
        assert contrast(scheme.text, scheme.background) >= 4.5, surface
        assert contrast(scheme.button_text, scheme.button) >= 4.5, surface
        assert contrast(scheme.button, scheme.background) >= 2.5, surface
    assert roles.scheme("light").button == roles.primary, "the CTA button wears the primary colour"


# ---------------------------------------------------------------- the frames


def test_primary_colour_fills_the_shoe_ad(shoe):
    _, _, frames = shoe
    primary = np.array(hex_rgb("#FF5A1F"))
    shares = [(np.abs(f.astype(int) - primary).max(axis=2) <= 13).mean() for _, f, _, _ in frames]
    assert np.mean(shares) > 0.15, shares  # the running-shoe ad that came out greyscale
    assert min(shares) > 0.005, shares  # every scene shows it somewhere


def test_packshot_is_found_where_the_scene_shows_it(shoe, bank):
    """The product check's two measures: SIFT features (a photo, a screenshot) or, for flat artwork
    with few features (the shoe), the packshot's own pixels where the layout put it."""
    for brand, _, frames in (shoe, bank):
        shot = np.asarray(load_packshot(brand.product_images[0].path, brand.product_images[0].kind).image)
        hero = next(s for s, *_ in frames if s.purpose == "Solution")  # where the packshot is, there
        for scene, frame, _, _ in frames:
            inliers, correlation = product_match(frame, shot), placed_product_correlation(frame, scene, brand)
            if shows_product(scene, brand):
                assert inliers >= 10 or correlation >= 0.8, (brand.name, scene.id, inliers, correlation)
            else:
                assert inliers < 10 and correlation == 0.0, (brand.name, scene.id, inliers)
                assert placed_product_correlation(frame, hero, brand) < 0.5, "no packshot there in this frame"
    assert not any(shows_product(s, shoe[0]) for s, *_ in shoe[2] if s.purpose == "Problem")


def test_real_logo_is_where_the_storyboard_puts_it(shoe):
    brand, _, frames = shoe
    logo = np.asarray(load_logo(brand.logo))
    found_in = []
    for scene, frame, placed, _ in frames:
        asks = {"logo", "logo_bottom_right"} & set(scene.brand_elements) or scene.purpose == "CTA"
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        box = placed.logo_box
        if asks:
            assert box is not None and placed.logo_is_image and SAFE_AREA.contains(box), scene.id
            inner = logo
            scale = min(box.width / inner.shape[1], box.height / inner.shape[0])
            tmpl = cv2.resize(inner, (int(inner.shape[1] * scale), int(inner.shape[0] * scale)), interpolation=cv2.INTER_AREA)
            a = tmpl[:, :, 3:4] / 255
            bg = np.median(frame[box.top:box.bottom, box.left:box.left + 4].reshape(-1, 3), axis=0)
            t = cv2.cvtColor((tmpl[:, :, :3] * a + bg * (1 - a)).astype(np.uint8), cv2.COLOR_RGB2GRAY)
            score = cv2.minMaxLoc(cv2.matchTemplate(gray, t, cv2.TM_CCOEFF_NORMED))[1]
            if score > 0.8:
                found_in.append(scene.id)
        else:
            assert box is None
    assert len(found_in) >= 2, found_in


def _label_ink(text: str, size: int) -> np.ndarray:
    img = Image.new("L", (int(font(size, "bold").getlength(text)) + 20, size + 20), 0)
    ImageDraw.Draw(img).text((10, 5), text, font=font(size, "bold"), fill=255)
    return np.asarray(img)


def test_no_purpose_label_is_drawn(shoe, bank):
    """Compare each frame against a render of every purpose's label: it must not be there. The
    same search finds the label at once when it is pasted into a frame (the control)."""
    labels = [(p.upper(), 30) for p in PURPOSES] + [(p, 44) for p in PURPOSES]  # the old chip, a title
    half = lambda img: cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2), interpolation=cv2.INTER_AREA)

    def best(gray: np.ndarray, ink: np.ndarray) -> float:
        low, high, _, _ = cv2.minMaxLoc(cv2.matchTemplate(gray, ink, cv2.TM_CCOEFF_NORMED))
        return max(high, -low)  # dark type on light and light on dark alike

    inks = [(label, half(_label_ink(label, size))) for label, size in labels]
    for _, _, frames in (shoe, bank):
        for scene, frame, _, _ in frames:
            gray = half(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
            for label, ink in inks:
                assert best(gray, ink) < 0.6, (scene.id, label, best(gray, ink))
    control = cv2.cvtColor(frames[0][1], cv2.COLOR_RGB2GRAY).copy()
    ink = _label_ink("HOOK / ATTENTION", 30)
    control[300:300 + ink.shape[0], 80:80 + ink.shape[1]] = ink
    assert best(half(control), half(ink)) > 0.9


def test_no_ink_outside_the_safe_area_and_every_block_readable(shoe, bank):
    for brand, brief, frames in (shoe, bank):
        for scene, frame, placed, layer in frames:
            alpha = np.asarray(layer.getchannel("A")).astype(np.int64)
            s = SAFE_AREA
            inside = alpha[s.top - 24:s.bottom + 24, s.left - 24:s.right + 24].sum()
            assert alpha.sum() - inside == 0, (brand.name, scene.id, "ink outside the safe area")
            names = [b for b in placed.blocks if brief.product.lower() in b.text.lower()]
            assert len(names) <= 1, (scene.id, "product name more than once")
            for block in placed.blocks:
                assert s.contains(block.ink), (scene.id, block.kind, block.ink)
                ratio = block_contrast(frame, block)
                assert ratio >= 4.5, (brand.name, scene.id, block.kind, block.text, ratio)


def test_long_korean_cta_wraps_inside_its_button(bank):
    brand, brief, frames = bank
    scene, frame, placed, _ = frames[-1]
    assert scene.onscreen_text == LONG_KO_CTA
    cta = next(b for b in placed.blocks if b.kind == "cta")
    assert not cta.shortened and SAFE_AREA.contains(placed.cta_box) and SAFE_AREA.contains(cta.ink)
    assert cta.ink.height > 1.6 * face(cta.mask.shape[0] // 3 or 1).size or cta.mask.shape[0] > 80  # two lines
    legal = next(b for b in placed.blocks if b.kind == "legal")
    assert legal.text == brand.legal_text and not legal.shortened, "the small print is verbatim"
    assert any(b.kind == "website" and b.text == brand.website for b in placed.blocks)


def test_without_product_images_no_product_shape_is_drawn():
    """A text-only kit: the Solution scene's key image is flat brand colour and shapes, no packshot."""
    brand = BrandKit.model_validate_json((DATA / "demo_brand.json").read_text())
    brief = Brief.model_validate_json((DATA / "demo_brief.json").read_text())
    scene = next(s for s in plan_storyboard(brief, brand).scenes if s.purpose == "Solution")
    assert layout_scene(scene, brand).product is None
    key = np.asarray(render_key_image(scene, brand, brief.product, seed="x").convert("L")).astype(np.float32)
    edges = np.abs(cv2.Laplacian(key, cv2.CV_32F))
    assert np.percentile(edges, 99.9) < 30, "only soft shapes: no drawn bottle, no text"


def test_the_planner_never_pastes_the_audience_or_repeats_a_caption():
    for name in ("shoe", "bank"):
        brand, brief = _kit(name)
        for duration in (15, 30, 60):
            plan = plan_storyboard(brief.model_copy(update={"duration": duration}), brand)
            texts = [s.onscreen_text for s in plan.scenes]
            assert all(brief.target_audience not in t + s.narration for t, s in zip(texts, plan.scenes))
            assert all(a != b for a, b in zip(texts, texts[1:])), texts
            assert not any(t.endswith("…") for t in texts), texts


@pytest.mark.parametrize("fmt", ["4:5", "1:1", "16:9"])
def test_each_format_gets_its_own_fitted_layout(fmt):
    """Renditions are laid out again: every block re-fitted inside the format's own safe area."""
    from sparklio_assets.geometry import SAFE_AREAS, SIZES

    brand, brief = _kit("bank")
    plan = plan_storyboard(brief.model_copy(update={"duration": 15}), brand)
    for scene in (plan.scenes[0], plan.scenes[-1]):
        key = render_key_image(scene, brand, brief.product, seed="f", fmt=fmt)
        assert key.size == SIZES[fmt]
        layer, placed = render_overlay(scene, brand, brief.product, "ko", backdrop=key, fmt=fmt)
        assert layer.size == SIZES[fmt] and placed.blocks
        frame = np.asarray(Image.alpha_composite(key.convert("RGBA"), layer).convert("RGB"))
        for block in placed.blocks:
            assert SAFE_AREAS[fmt].contains(block.ink), (fmt, scene.id, block.kind, block.ink)
            assert not block.shortened and block_contrast(frame, block) >= 4.5, (fmt, block.kind)


def test_a_generated_portrait_picture_is_shown_whole_in_16x9_beside_the_copy(tmp_path):
    """A 9:16 ComfyUI picture cannot be re-composed for 16:9: it is shown whole in the right half
    over a soft fill made from itself, rendered at 1920x1080 with the 16:9 overlay."""
    from sparklio_assets.geometry import Box
    from sparklio_assets.models import MotionRecord
    from sparklio_assets.render import SceneInput, frames_i420, planes
    from sparklio_assets.renditions import picture_box

    assert picture_box((1080, 1920), "4:5", None) is None  # covering 4:5 keeps 70%: cover
    box = picture_box((1080, 1920), "16:9", Box(1000, 60, 1830, 1020))
    assert box == Box(960, 0, 1920, 1080)
    picture = np.zeros((1920, 1080, 3), np.uint8)
    picture[:, :, 1] = 220  # a bright green portrait picture
    cv2.imwrite(str(tmp_path / "key.png"), picture)
    overlay = Image.new("RGBA", (1920, 1080), (0, 0, 0, 0))
    overlay.paste((255, 255, 255, 255), (100, 500, 600, 560))
    overlay.save(tmp_path / "overlay.png")
    motion = MotionRecord(scene_id="scene_001", engine="kenburns", motion_style="pulse effect",
                          image_path=str(tmp_path / "key.png"), duration_seconds=1.0)
    frame = next(frames_i420([SceneInput(24, motion, tmp_path / "overlay.png", box)], size=(1920, 1080)))
    assert frame.shape == (1080 * 3 // 2, 1920)
    bgr = cv2.cvtColor(frame, cv2.COLOR_YUV2BGR_I420)
    # the picture, whole (1080 tall = 608 wide) centred in the right half; dimmed fill elsewhere
    assert bgr[540, 1440, 1] > 200 and bgr[540, 1200, 1] > 200
    assert 60 < bgr[300, 800, 1] < 150, "the fill is the picture's own colour, dimmed"
    assert (planes(frame, 1920, 1080)[0][520:540, 200:500] > 200).all(), "the 16:9 overlay on top"


def test_another_seed_gives_another_picture_with_everything_in_its_place():
    """The launchpad's seed re-arranges the built-in engine's shapes; the packshot, the copy and
    the logo keep their designed places, and the copy stays readable on the new picture."""
    from sparklio_assets.image_engine import paste_clipped, product_placement, sprite_origin

    brand, brief = _kit("shoe")
    plan = plan_storyboard(brief.model_copy(update={"duration": 15}), brand)
    for scene in plan.scenes:
        a, b = (render_key_image(scene, brand, brief.product, seed=seed) for seed in ("job/s", "job/s/seed-7"))
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() > 0.3, scene.id
        assert render_key_image(scene, brand, brief.product, seed="job/s").tobytes() == a.tobytes(), "same seed, same"
        placed = product_placement(scene, brand)
        if placed is not None:  # the packshot's own pixels are where they were
            sprite, box = placed
            layer = Image.new("RGBA", (1080, 1920), (0, 0, 0, 0))
            paste_clipped(layer, sprite, *sprite_origin(sprite, box))
            inside = np.asarray(layer.getchannel("A")) == 255
            assert (np.asarray(a)[inside] == np.asarray(b)[inside]).all(), scene.id
        layer, lay = render_overlay(scene, brand, brief.product, "en", backdrop=b)
        frame = np.asarray(Image.alpha_composite(b.convert("RGBA"), layer).convert("RGB"))
        assert all(block_contrast(frame, block) >= 4.5 for block in lay.blocks), scene.id
