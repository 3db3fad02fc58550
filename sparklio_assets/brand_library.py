"""Stored brand kits: a folder per brand (`<library>/<brand_id>/brand.json` and its files), made
from an upload (the API's POST /brands) and found again by the brief's `brand_id`.

An upload is the kit's JSON plus the files it names by plain file name. Everything is written to
a fresh folder beside the library, validated there exactly as a kit on disk is (BrandKit.from_file:
images sniffed by their bytes, sizes and pixel counts capped, fonts checked), and only then swapped
in, so a bad upload never replaces a good brand and a reader never sees half a brand.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path

from pydantic import ValidationError

from .files import json_depth
from .models import BrandKit, validation_problems

BRAND_FILE = "brand.json"
MAX_DEPTH = 8  # a kit nests 3 deep
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # a plain file or folder name


class BrandError(ValueError):
    """A refused upload: (field, reason) pairs, as the API's 422 lists them."""

    def __init__(self, problems: list[tuple[str, str]]):
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))
        self.problems = problems


def _named_files(kit: dict) -> list[tuple[str, str]]:
    """(field, file name) for every file the kit names."""
    named = []
    if isinstance(kit.get("logo"), str):
        named.append(("kit.logo", kit["logo"]))
    for i, image in enumerate(kit.get("product_images") or []):
        path = image.get("path") if isinstance(image, dict) else image
        if isinstance(path, str):
            named.append((f"kit.product_images.{i}", path))
    fonts = kit.get("fonts") if isinstance(kit.get("fonts"), dict) else {}
    named += [(f"kit.fonts.{k}", v) for k, v in fonts.items() if isinstance(v, str)]
    return named


def brand_folder(library: Path, brand_id: str) -> Path | None:
    """Where a brand id is kept; None for an id that is not a plain folder name."""
    return library / brand_id if SAFE_NAME.match(brand_id) else None


def load_brand(library: Path, brand_id: str) -> BrandKit | None:
    """The stored kit for a brand id, or None when there is none."""
    folder = brand_folder(library, brand_id)
    if folder is None or not (folder / BRAND_FILE).is_file():
        return None
    return BrandKit.from_file(folder / BRAND_FILE)


def save_brand(library: Path, kit_json: str, files: dict[str, bytes]) -> BrandKit:
    """Store an uploaded kit (its JSON and the files it names), replacing that brand's previous
    kit only once the new one is valid. Raises BrandError naming each problem."""
    if json_depth(kit_json, MAX_DEPTH) > MAX_DEPTH:
        raise BrandError([("kit", f"nested deeper than {MAX_DEPTH} levels")])
    try:
        kit = json.loads(kit_json)
    except ValueError as error:
        raise BrandError([("kit", f"not valid JSON ({error})")]) from None
    if not isinstance(kit, dict):
        raise BrandError([("kit", f"must be a JSON object (a BrandKit), not {type(kit).__name__}")])
    brand_id = kit.get("brand_id")
    problems = []
    if not isinstance(brand_id, str) or brand_folder(library, brand_id) is None:
        problems.append(("kit.brand_id", "must be a plain name (letters, digits, '.', '_', '-'; at most 100) "
                                         f"to be stored under (got {brand_id!r})"))
    named = _named_files(kit)
    for field, name in named:
        if not SAFE_NAME.match(name):
            problems.append((field, f"must name an uploaded file by its plain file name (got {name!r})"))
        elif name not in files:
            problems.append((field, f"names {name!r}, which is not among the uploaded files {sorted(files)}"))
    for name in sorted(set(files) - {n for _, n in named}):
        problems.append((f"files.{name}", "not named by the kit (logo, product_images, fonts)"))
    if problems:
        raise BrandError(problems)
    library.mkdir(parents=True, exist_ok=True)
    incoming = library / f".incoming-{uuid.uuid4().hex}"
    incoming.mkdir()
    try:
        for name, data in files.items():
            (incoming / name).write_bytes(data)
        (incoming / BRAND_FILE).write_text(json.dumps(kit, ensure_ascii=False, indent=2), encoding="utf-8")
        try:
            BrandKit.from_file(incoming / BRAND_FILE)
        except ValidationError as error:
            raise BrandError(validation_problems(error.errors(), "kit")) from None
        final = library / brand_id
        old = library / f".old-{uuid.uuid4().hex}"
        if final.exists():
            final.rename(old)
        incoming.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
    return BrandKit.from_file(final / BRAND_FILE)
