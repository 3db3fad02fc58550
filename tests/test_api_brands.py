"""POST /brands and GET /brands/{id} against the real app (in process): a kit with its real logo
and packshot is stored, found again by the brief's brand_id, and used for the storyboard's job;
a bad upload names the field and the reason and never replaces the stored brand."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

KIT_DIR = Path(__file__).resolve().parents[1] / "sparklio_assets" / "data" / "demo_kit"
KIT = json.loads((KIT_DIR / "brand.json").read_text(encoding="utf-8"))
FILES = {"logo.png": (KIT_DIR / "logo.png").read_bytes(), "product.png": (KIT_DIR / "product.png").read_bytes()}
BRIEF = {"brand_id": KIT["brand_id"], "product": "Daily Eye Care Moisturizer", "target_audience": "20-30대 직장인",
         "goal": "제품 인지도 + 전환", "duration": 5, "tone": "professional_warm", "channels": ["instagram_reels"]}


@pytest.fixture(scope="module")
def home(api_home):  # tests/conftest.py
    return api_home




def upload(client, kit: dict, files: dict[str, bytes]):
    return client.post("/brands", data={"kit": json.dumps(kit, ensure_ascii=False)},
                       files=[("files", (name, data, "application/octet-stream")) for name, data in files.items()])


@pytest.fixture(scope="module")
def stored(client):
    response = upload(client, KIT, FILES)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_kit_with_its_files_is_stored_and_read_back(client, home, stored):
    assert stored["brand_id"] == KIT["brand_id"] and stored["files"] == ["logo.png", "product.png"]
    assert stored["brand"]["logo"] == "logo.png" and str(home) not in json.dumps(stored), "no server paths"
    folder = home / "brands" / KIT["brand_id"]
    assert (folder / "logo.png").read_bytes() == FILES["logo.png"]
    again = client.get(f"/brands/{KIT['brand_id']}")
    assert again.status_code == 200 and again.json() == stored
    assert client.get("/brands/nobody").status_code == 404


def test_a_storyboard_for_the_brand_id_uses_the_stored_kit(client, home, stored):
    made = client.post("/video/storyboard", json=BRIEF)
    assert made.status_code == 200, made.text
    job = json.loads((home / "jobs" / made.json()["storyboard_id"] / "job.json").read_text())
    folder = home / "brands" / KIT["brand_id"]
    assert job["brand"]["logo"] == str(folder / "logo.png")
    assert [p["path"] for p in job["brand"]["product_images"]] == [str(folder / "product.png")]
    assert made.json()["storyboard"]["metadata"]["brand_colors"] == KIT["colors"]


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


@pytest.mark.parametrize("kit, files, field, words", [
    ({**KIT, "logo": "../logo.png"}, FILES, "kit.logo", "plain file name"),
    (KIT, {"product.png": FILES["product.png"]}, "kit.logo", "not among the uploaded files"),
    (KIT, {**FILES, "extra.png": FILES["logo.png"]}, "files.extra.png", "not named by the kit"),
    (KIT, {**FILES, "logo.png": b"%PDF-1.4 not an image"}, "kit.logo", "not an image"),
    (KIT, {**FILES, "logo.png": _png(20_000, 20_000)}, "kit.logo", "too large"),
    ({**KIT, "brand_id": "../../etc"}, FILES, "kit.brand_id", "plain name"),
    ({**KIT, "colors": ["red"]}, FILES, "kit.colors", "hex colour"),
])
def test_a_bad_upload_names_the_field_and_keeps_the_stored_brand(client, home, stored, kit, files, field, words):
    before = {p.name: p.read_bytes() for p in (home / "brands" / KIT["brand_id"]).iterdir()}
    response = upload(client, kit, files)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and words in e["reason"] for e in errors), errors
    assert {p.name: p.read_bytes() for p in (home / "brands" / KIT["brand_id"]).iterdir()} == before
    assert not [p for p in (home / "brands").iterdir() if p.name.startswith(".")], "nothing half-written left"


def test_uploads_have_their_own_limit(client):
    big = {**FILES, "product.png": b"\0" * (21 * 1024 * 1024)}
    response = upload(client, KIT, big)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
