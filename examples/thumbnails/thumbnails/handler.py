"""Make a thumbnail of each picture an item names: `rediswq worker --handler
thumbnails.handler:make_thumbnail`.

An item is a file name under INPUT_DIR (default /data/in). The thumbnail, a PNG at most
THUMBNAIL_SIZE pixels (default 64) on its longer side, is written to OUTPUT_DIR when that is set;
the result (kept with --results) describes it either way. A file that is not a picture is rejected
(no retry can help); a missing one fails the attempt, which is retried: it may still be arriving.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from rediswq import Reject


def _settings() -> tuple[Path, Path | None, int]:
    output = os.environ.get("OUTPUT_DIR", "")
    return (
        Path(os.environ.get("INPUT_DIR", "/data/in")),
        Path(output) if output else None,
        int(os.environ.get("THUMBNAIL_SIZE", "64")),
    )


def make_thumbnail(item: str) -> dict[str, Any]:
    inputs, outputs, size = _settings()
    source = (inputs / item).resolve()
    if not source.is_relative_to(inputs.resolve()):
        raise Reject(f"{item!r} is outside {inputs}")
    try:
        with Image.open(source) as picture:
            original, kind = picture.size, picture.format
            thumbnail = picture.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, IsADirectoryError) as exc:
        raise Reject(f"{item} is not a picture this handler can read ({exc})") from None
    thumbnail.thumbnail((size, size))
    encoded = io.BytesIO()
    thumbnail.save(encoded, "PNG")
    data = encoded.getvalue()
    if outputs is not None:
        _write(outputs / f"{Path(item).stem}.png", data)
    return {
        "source": item,
        "format": kind,
        "size": list(original),
        "thumbnail": list(thumbnail.size),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _write(target: Path, data: bytes) -> None:
    """All or nothing, and a second run of the item overwrites the first's file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    partial.replace(target)
