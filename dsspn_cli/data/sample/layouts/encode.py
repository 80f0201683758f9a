"""The bytes of the files the layouts are made of, as every writer encodes them: PNG (labels
and Cityscapes' images), JPEG at quality 90 (the other images), compact JSON."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(arr: np.ndarray, mode: str, palette: bytes | None = None) -> bytes:
    """A PNG of ``arr``; with ``palette`` (mode P), an indexed PNG whose pixel values are the
    palette indices, as VOC stores its label maps."""
    buf = io.BytesIO()
    image = Image.fromarray(arr, mode=mode)
    if palette is not None:
        image.putpalette(palette)
    image.save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode="RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def json_bytes(obj) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode("utf-8")
