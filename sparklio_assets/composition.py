"""Where things go in a scene: one layout per scene purpose, shared by the key-image engine (which
paints the background and the product) and the overlay (which sets the copy, the logo, the
button). Both read the same boxes, so copy never lands on the packshot and the checks know where
to look.

Layouts differ by purpose: the Hook shows the product cropped by the frame edge under a large
headline; the Problem is type on the dark surface; the Solution puts the packshot centre stage;
Social Proof sets it beside the stars; the CTA end card has the logo, the packshot, the button,
the website and the legal line. Without product images the same boxes hold typography and shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .colour_roles import ColourRoles, Scheme, assign_roles
from .geometry import MASTER, SAFE_AREAS, SIZES, Box
from .models import BrandKit, Scene

SURFACES = {"hook": "primary", "problem": "dark", "solution": "light", "social": "primary", "cta": "light"}


def act_of(scene: Scene) -> str:
    """hook | problem | solution | social | cta, from the scene's purpose (free text from an LLM)."""
    p = scene.purpose.lower()
    if "cta_button" in scene.brand_elements or p.startswith(("cta", "call")):
        return "cta"
    for key in ("hook", "problem", "solution", "social"):
        if p.startswith(key) or key in p:
            return key
    return "solution" if "product_3d" in scene.brand_elements else "hook"


def shows_product(scene: Scene, brand: BrandKit) -> bool:
    """Whether this scene composes the brand's packshot (what the product check looks for)."""
    return bool(brand.product_images) and (act_of(scene) in ("hook", "solution", "social", "cta")
                                           or "product_3d" in scene.brand_elements)


@dataclass(frozen=True)
class SceneLayout:
    act: str
    fmt: str
    frame: Box
    safe: Box
    scheme: Scheme
    roles: ColourRoles
    copy: Box | None  # headline / caption
    product: Box | None  # where the packshot goes (may reach past the frame edge: a crop)
    logo: Box | None
    cta: Box | None
    website: Box | None
    legal: Box | None
    badge: Box | None
    stars: Box | None
    align: str = "center"  # of the copy: center | left


def _variant(scene: Scene) -> int:
    return int(scene.id.rsplit("_", 1)[-1]) if scene.id.rsplit("_", 1)[-1].isdigit() else 1


def layout_scene(scene: Scene, brand: BrandKit, fmt: str = MASTER) -> SceneLayout:
    act = act_of(scene)
    width, height = SIZES[fmt]
    frame, safe = Box(0, 0, width, height), SAFE_AREAS[fmt]
    roles = assign_roles(brand.colors)
    surface = SURFACES[act]
    if act == "social" and _variant(scene) % 2 == 0:
        surface = "light"
    scheme = roles.scheme(surface)
    has_product = shows_product(scene, brand)
    wants_logo = "logo" in scene.brand_elements or "logo_bottom_right" in scene.brand_elements or act == "cta"
    landscape = width > height
    s = safe
    u = min(s.width, s.height) / 880  # layout unit: 1.0 on the 9:16 master
    logo = cta = website = legal = badge = stars = product = None
    align = "center"
    logo_h = int(96 * u)
    if landscape:
        half = s.left + s.width // 2
        text_col = Box(s.left, s.top, half - int(30 * u), s.bottom)
        if has_product:
            product = Box(half + int(20 * u), s.top + int(40 * u), s.right, s.bottom - int(20 * u))
        else:
            text_col = s
    else:
        text_col = s
    if wants_logo:
        if "logo_bottom_right" in scene.brand_elements and act != "cta":
            logo = Box(s.right - int(330 * u), s.bottom - logo_h, s.right, s.bottom)
        else:
            logo = Box(text_col.center[0] - int(260 * u), s.top + int(10 * u),
                       text_col.center[0] + int(260 * u), s.top + int(10 * u) + logo_h)
    # Copy starts under the logo row whether or not this scene has a top logo, so moving the logo
    # never moves the copy (and scenes of one ad share a baseline).
    top = s.top + int(10 * u) + logo_h + int(40 * u)
    if act == "hook":
        align = "left"
        if landscape:
            copy = Box(text_col.left, top, text_col.right, text_col.bottom - int(140 * u))
            if has_product:  # strides in past the right edge, clear of a bottom-right logo
                above_logo = logo.top if logo is not None and logo.top > s.center[1] else s.bottom
                product = Box(half + int(60 * u), top, width + int(200 * u), above_logo - int(20 * u))
        else:
            copy = Box(s.left, top, s.right - int(40 * u), s.top + int(560 * u))
            if has_product:  # cropped by the left frame edge, under the headline, clear of the logo
                product = Box(-int(200 * u), copy.bottom + int(60 * u), int(660 * u), height + int(80 * u))
    elif act == "problem":
        copy = Box(text_col.left, s.top + int(260 * u), text_col.right, s.bottom - int(260 * u))
        if has_product and not landscape:
            product = Box(s.center[0] - int(170 * u), s.bottom - int(380 * u), s.center[0] + int(170 * u),
                          s.bottom - int(20 * u))
            copy = Box(copy.left, s.top + int(120 * u), copy.right, product.top - int(60 * u))
    elif act == "solution":
        if landscape:
            copy = Box(text_col.left, top, text_col.right, s.bottom - int(40 * u))
        else:
            copy = Box(s.left, top, s.right, top + int(330 * u))
            if has_product:
                logo_below = logo is not None and logo.top > s.center[1]
                product = Box(s.left + int(90 * u), copy.bottom + int(70 * u), s.right - int(90 * u),
                              s.bottom - int(30 * u) - (logo_h + int(20 * u) if logo_below else 0))
            else:
                copy = Box(s.left, s.top + int(300 * u), s.right, s.bottom - int(300 * u))
    elif act == "social":
        if "certification_badge" in scene.brand_elements:
            d = int(200 * u)
            badge = Box(s.right - d, s.top, s.right, s.top + d)
        if landscape:
            copy = Box(text_col.left, s.top + int(160 * u), text_col.right, s.bottom - int(200 * u))
            stars = Box(text_col.left, copy.bottom + int(30 * u), text_col.left + int(420 * u),
                        copy.bottom + int(110 * u))
        else:
            copy_top = (badge.bottom + int(40 * u)) if badge else top
            if not has_product:  # type-led: the claim and the stars in the middle of the frame
                copy_top = max(copy_top, s.center[1] - int(260 * u))
            copy = Box(s.left, copy_top, s.right, copy_top + int(300 * u))
            stars = Box(s.center[0] - int(230 * u), copy.bottom + int(20 * u), s.center[0] + int(230 * u),
                        copy.bottom + int(100 * u))
            if has_product:
                product = Box(s.left + int(140 * u), stars.bottom + int(60 * u), s.right - int(140 * u),
                              s.bottom - int(20 * u))
    else:  # cta: the end card
        legal_h = int(110 * u) if brand.legal_text else 0
        legal = Box(text_col.left, s.bottom - legal_h, text_col.right, s.bottom) if legal_h else None
        foot = (legal.top if legal else s.bottom) - int(20 * u)
        website_h = int(80 * u) if brand.website else 0
        website = Box(text_col.left, foot - website_h, text_col.right, foot) if website_h else None
        button_bottom = (website.top - int(16 * u)) if website else foot
        cta = Box(text_col.left + int(20 * u), button_bottom - int(200 * u), text_col.right - int(20 * u),
                  button_bottom)
        if has_product:
            copy = None
            product = Box(text_col.left + int(120 * u), top + int(10 * u), text_col.right - int(120 * u),
                          cta.top - int(60 * u))
            if landscape:
                product = Box(s.left + s.width // 2 + int(20 * u), s.top, s.right, s.bottom)
        else:
            copy = Box(text_col.left, top + int(60 * u), text_col.right, cta.top - int(80 * u))
    if product is not None and fmt != MASTER and act != "hook":
        # Ken Burns zooms the picture up to 1.16x about the frame's centre; a feed frame has no
        # margin past its safe area, so the packshot is drawn that much closer to the centre.
        cx, cy, k = width / 2, height / 2, 1 / 1.16
        product = Box(int(cx + (product.left - cx) * k), int(cy + (product.top - cy) * k),
                      int(cx + (product.right - cx) * k), int(cy + (product.bottom - cy) * k))
    return SceneLayout(act, fmt, frame, safe, scheme, roles, copy, product, logo, cta, website, legal, badge, stars,
                       align)
