"""Brand kits with their files: upload once (`POST /brands`), then every storyboard request whose
`brand_id` names the brand uses it. Files are kept with the brand in the media folder
(sparklio_assets/brand_library.py); their content is sniffed and checked, never their declared type."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, UploadFile
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from sparklio_assets import store_paths as layout
from sparklio_assets.brand_library import BrandError, load_brand, save_brand
from sparklio_assets.models import BrandKit

from ..dependencies import LinksDep, StoreDep
from ..errors import problem_422
from ..schemas import FieldError
from .responses import BODY

router = APIRouter(prefix="/brands", tags=["brands"])

BrandId = Annotated[str, PathParam(description="the kit's brand_id", examples=["2f0c6a2e-3c55-4d7e-9a57-2d1f3b8c9e10"])]
NO_BRAND = {404: {"description": "no such brand"}}


class BrandResponse(BaseModel):
    brand_id: str
    brand: dict[str, Any] = Field(description="the stored kit; files by their names in the upload")
    files: list[str] = Field(description="the files kept with the kit")
    brand_url: str


def _public(kit: BrandKit, links: LinksDep) -> BrandResponse:
    """The kit as a client sent it: file names, not the server's paths."""
    data = kit.model_dump()
    data["logo"] = Path(kit.logo).name if kit.logo else None
    data["product_images"] = [{**image, "path": Path(image["path"]).name} for image in data["product_images"]]
    data["fonts"] = {k: Path(v).name if v else None for k, v in data["fonts"].items()}
    files = sorted({name for name in [data["logo"], *(i["path"] for i in data["product_images"]),
                                      *data["fonts"].values()] if name})
    return BrandResponse(brand_id=kit.brand_id, brand=data, files=files, brand_url=links(f"/brands/{kit.brand_id}"))


@router.post("", response_model=BrandResponse, status_code=201, responses={**BODY},
             summary="Store a brand kit with its logo, packshots and fonts")
def upload_brand(store: StoreDep, links: LinksDep,
                 kit: Annotated[str, Form(description="the brand kit JSON (fields as BrandKit); `logo`, "
                                                      "`product_images` and `fonts` name uploaded files")],
                 files: Annotated[list[UploadFile] | None, File(description="the files the kit names")] = None
                 ) -> BrandResponse:
    """Validates the kit and its files as the CLI does a kit on disk (images sniffed by content,
    bytes and pixels capped, fonts checked for Hangul) and keeps them under the media folder;
    uploading the same brand_id again replaces the brand once the new kit is valid."""
    uploads: dict[str, bytes] = {}
    for upload in files or []:
        name = upload.filename or ""
        if name in uploads:
            return problem_422([FieldError(field=f"files.{name}", location="body", reason="uploaded twice")])
        uploads[name] = upload.file.read()
    try:
        stored = save_brand(layout.brand_library(store), kit, uploads)
    except BrandError as error:
        return problem_422([FieldError(field=f, location="body", reason=r) for f, r in error.problems])
    return _public(stored, links)


@router.get("/{brand_id}", response_model=BrandResponse, responses={**NO_BRAND}, summary="A stored brand kit")
def get_brand(brand_id: BrandId, store: StoreDep, links: LinksDep) -> BrandResponse:
    kit = load_brand(layout.brand_library(store), brand_id)
    if kit is None:
        raise HTTPException(404, detail=f"no brand {brand_id!r} is stored; POST /brands first")
    return _public(kit, links)
