"""Frame geometry in one place: the size of every output format and the area of each that the
platforms leave uncovered (their captions, buttons and progress bars sit over the rest).

The 9:16 master is 1080x1920. Reels/Shorts/TikTok cover the top ~12%, the bottom ~22% (caption,
buttons) and a strip on the right (like, share), so the safe area is the middle. Feed formats (4:5,
1:1, 16:9) show the whole frame; they keep a small margin so nothing touches the edge.
"""

from __future__ import annotations

from dataclasses import dataclass

MASTER = "9:16"


@dataclass(frozen=True)
class Box:
    left: int
    top: int
    right: int
    bottom: int

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def center(self) -> tuple[int, int]:
        return (self.left + self.right) // 2, (self.top + self.bottom) // 2

    def contains(self, other: Box) -> bool:
        return (self.left <= other.left and self.top <= other.top
                and other.right <= self.right and other.bottom <= self.bottom)

    def intersects(self, other: Box) -> bool:
        return not (other.left >= self.right or other.right <= self.left
                    or other.top >= self.bottom or other.bottom <= self.top)

    def inset(self, dx: int, dy: int | None = None) -> Box:
        dy = dx if dy is None else dy
        return Box(self.left + dx, self.top + dy, self.right - dx, self.bottom - dy)


SIZES: dict[str, tuple[int, int]] = {"9:16": (1080, 1920), "4:5": (1080, 1350), "1:1": (1080, 1080),
                                     "16:9": (1920, 1080)}
WIDTH, HEIGHT = SIZES[MASTER]

SAFE_AREAS: dict[str, Box] = {
    "9:16": Box(left=80, top=240, right=960, bottom=1480),
    "4:5": Box(left=60, top=60, right=1020, bottom=1290),
    "1:1": Box(left=60, top=60, right=1020, bottom=1020),
    "16:9": Box(left=90, top=60, right=1830, bottom=1020),
}
SAFE_AREA = SAFE_AREAS[MASTER]
SAFE_CENTER_X = (SAFE_AREA.left + SAFE_AREA.right) // 2


def frame_box(fmt: str = MASTER) -> Box:
    width, height = SIZES[fmt]
    return Box(0, 0, width, height)
