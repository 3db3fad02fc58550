"""Output formats per channel. Every ad is made 9:16 (the master, 1080x1920); a channel that
shows another shape gets a rendition with its own layout of the same scenes (renditions.py), so
one storyboard and one set of scenes serve every placement.

Feed placements: Instagram feed 4:5 (portrait feed, the largest area it shows); Facebook feed
1:1 (what both its desktop and mobile feeds show uncropped); YouTube 16:9.
"""

from __future__ import annotations

from .geometry import MASTER, SAFE_AREAS, SIZES  # noqa: F401  (frame geometry lives in geometry.py)
from .models import Channel

CHANNEL_FORMAT: dict[Channel, str] = {
    "instagram_reels": "9:16", "instagram_stories": "9:16", "youtube_shorts": "9:16", "tiktok": "9:16",
    "facebook_reels": "9:16", "instagram_feed": "4:5", "facebook_feed": "1:1", "youtube": "16:9",
}


def renditions_for(channels: list[Channel]) -> list[str]:
    """The formats besides the 9:16 master that these channels need, in a stable order."""
    wanted = {CHANNEL_FORMAT[c] for c in channels}
    return [fmt for fmt in SIZES if fmt != MASTER and fmt in wanted]


def file_tag(fmt: str) -> str:
    """'16:9' → '16x9' (for file names and URLs)."""
    return fmt.replace(":", "x")
