"""Colour roles: every brand colour gets a job (background, accent, text, button), chosen so that
copy reaches WCAG AA (4.5:1) against what it sits on and buttons stand out from the background
(WCAG 1.4.11, 3:1). The primary colour (colors[0]) is the brand's: it is always given a role that
fills a visible share of the frame, never dropped because another colour contrasts better.

A scene does not use one fixed background: `scheme` gives each scene of the story a surface in
turn (the primary, the light neutral, the dark neutral), with its own text, accent and button
colours, so a three-colour kit shows all three and a one-colour kit still reads well.
"""

from __future__ import annotations

from dataclasses import dataclass

RGB = tuple[int, int, int]
WHITE: RGB = (255, 255, 255)
INK: RGB = (17, 17, 20)
WCAG_AA = 4.5
UI_CONTRAST = 3.0
# A filled button in the primary colour may sit a little under 3:1 against a light surface (the
# orange #FF5A1F on #F5F5F5 is 2.9:1): it is a large solid shape, not a thin outline, and its label
# still meets 4.5:1 against it. Below 2.5:1 it would melt into the background, so another colour is used.
PRIMARY_BUTTON_CONTRAST = 2.5


def hex_rgb(color: str) -> RGB:
    return tuple(int(color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def rgb_hex(rgb: RGB) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb)


def luminance(rgb: RGB) -> float:
    """WCAG relative luminance."""
    def channel(c: float) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast(a: RGB, b: RGB) -> float:
    la, lb = sorted((luminance(a), luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(round(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def saturation(rgb: RGB) -> float:
    hi, lo = max(rgb), min(rgb)
    return 0.0 if hi == 0 else (hi - lo) / hi


def readable_on(background: RGB, candidates: list[RGB], minimum: float = WCAG_AA) -> RGB:
    """The first candidate (brand colours first) that reaches `minimum` against the background;
    else near-black or white, whichever contrasts more (one of them always reaches 4.58:1)."""
    for colour in candidates:
        if contrast(colour, background) >= minimum:
            return colour
    return max((INK, WHITE), key=lambda c: contrast(c, background))


@dataclass(frozen=True)
class Scheme:
    """The colours of one scene: every pair used for copy meets 4.5:1 by construction."""

    background: RGB
    shade: RGB  # the background's companion for gradients and shapes
    accent: RGB  # shapes, rules, glows
    text: RGB  # copy directly on the background
    button: RGB
    button_text: RGB
    name: str  # which surface: primary | light | dark


@dataclass(frozen=True)
class ColourRoles:
    primary: RGB
    light: RGB
    dark: RGB
    accent: RGB
    palette: tuple[RGB, ...]

    def on(self, background: RGB) -> RGB:
        """Copy colour for a background: a brand colour when one is readable, else ink or white."""
        others = [c for c in (self.dark, self.light, self.primary, *self.palette) if c != background]
        return readable_on(background, others)

    def scheme(self, surface: str) -> Scheme:
        """A scene's colours on one of the three surfaces."""
        background = {"primary": self.primary, "light": self.light, "dark": self.dark}[surface]
        text = self.on(background)
        # The button: the primary on neutral surfaces (the brand's colour where the eye goes),
        # on the primary surface the neutral that stands out most.
        if surface == "primary":
            brand_neutrals = [c for c in (self.dark, self.light)
                              if c != background and contrast(c, background) >= UI_CONTRAST]
            button = brand_neutrals[0] if brand_neutrals else max((INK, WHITE), key=lambda c: contrast(c, background))
        else:
            button = self.primary if contrast(self.primary, background) >= PRIMARY_BUTTON_CONTRAST else self.accent
            if contrast(button, background) < PRIMARY_BUTTON_CONTRAST:
                button = text
        accent = self.primary if surface != "primary" else (self.accent if self.accent != self.primary else text)
        shade = mix(background, INK if luminance(background) > 0.4 else WHITE, 0.12)
        return Scheme(background, shade, accent, text, button, self.on(button), surface)


def assign_roles(colors: list[str]) -> ColourRoles:
    """Roles for a kit's colours (primary first). The light and dark neutrals are the lightest and
    darkest of the others, derived from the primary when the kit has too few colours."""
    palette = [hex_rgb(c) for c in colors]
    primary, rest = palette[0], palette[1:]
    by_lum = sorted(rest, key=luminance)
    dark = by_lum[0] if by_lum and luminance(by_lum[0]) < 0.18 else mix(primary, INK, 0.82)
    light = by_lum[-1] if by_lum and luminance(by_lum[-1]) > 0.6 else mix(primary, WHITE, 0.9)
    if luminance(primary) > 0.6 and not any(luminance(c) > 0.6 for c in rest):
        light = primary  # a light primary (cream, beige) is itself the light surface
    if luminance(primary) < 0.04 and not any(luminance(c) < 0.18 for c in rest):  # a near-black primary
        dark = primary
    # The accent: the most saturated colour that is not the primary (the primary when none is).
    accent = max(rest, key=saturation) if rest and max(map(saturation, rest)) > 0.25 else primary
    return ColourRoles(primary, light, dark, accent, tuple(palette))
