"""What a run did to its images, in one line: ``restored 14 image(s), quarantined 2 (a.png: mask is 16x16 but ...)``.

An image quarantined at restore time (its mask or kernel missing or unfit) is in a finished shard but was not restored;
counting shards alone made a run whose every image was quarantined read as a success.
"""

from collections.abc import Iterable, Mapping
from typing import Any

REASONS_SHOWN = 3


def image_outcome(manifests: Iterable[Mapping[str, Any]]) -> tuple[int, dict[str, str]]:
    """(images restored, or restored earlier and kept; ``{image id: reason}`` of those quarantined) over the finished
    shards' manifests."""
    restored, quarantined = 0, {}
    for manifest in manifests:
        held = dict(manifest.get("quarantined") or {})
        restored += int(manifest.get("images", 0)) - len(held)
        quarantined |= held
    return restored, quarantined


def outcome_line(restored: int, quarantined: Mapping[str, str]) -> str:
    """``restored N image(s), quarantined M`` and, when M > 0, the first reasons (``diffpir status`` lists them
    all)."""
    line = f"restored {restored} image(s), quarantined {len(quarantined)}"
    if quarantined:
        first = "; ".join(f"{image_id}: {reason}" for image_id, reason in sorted(quarantined.items())[:REASONS_SHOWN])
        more = f"; and {len(quarantined) - REASONS_SHOWN} more" if len(quarantined) > REASONS_SHOWN else ""
        line += f" ({first}{more})"
    return line


def nothing_restored(restored: int, quarantined: Mapping[str, str]) -> str | None:
    """The failure message of a run whose every image was quarantined (None when any image was restored)."""
    if restored or not quarantined:
        return None
    return (
        f"every image was quarantined, none restored: {outcome_line(restored, quarantined)}; fix the inputs it names"
    )
