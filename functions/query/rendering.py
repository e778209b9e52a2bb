"""Render a DICOM instance as a PNG or JPEG picture: pure functions, bytes in, image bytes out.

The first frame only. Grayscale pixels go through the Modality LUT (RescaleSlope/Intercept or
a Modality LUT Sequence), then the VOI: a window given by the caller (PS3.18 ``window=``), else
the header's first WindowCenter/WindowWidth with its VOILUTFunction, else a VOI LUT Sequence,
else the full range of the frame. MONOCHROME1 is inverted so that the picture reads like
MONOCHROME2. RGB and YBR are shown as RGB, PALETTE COLOR through its lookup table.

Compressed transfer syntaxes are decoded by whichever pydicom pixel plugins are installed
(pylibjpeg with libjpeg/openjpeg, Pillow; RLE is native). This module imports numpy, pydicom
and Pillow at module level: the query routes import it only when a picture is asked for, so
that the function's cold start for searches stays small.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from common.decode_limits import check_pixel_budget, read_part10
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut

PNG = "image/png"
JPEG = "image/jpeg"
MEDIA_TYPES = (PNG, JPEG)
VoiFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
MAX_SIZE = 4096
# Decoded bytes of the one frame a picture is made from (PS3.3 C.7.6.3: Rows x Columns x
# SamplesPerPixel x BitsAllocated/8): 4096 x 4096 RGB at 8 bits, or 4096 x 4096 x 1.5 at
# 16 bits. With the instance's bytes, the 8-bit picture and Pillow's copy of it, one render
# stays near 200 MB (bench/decode_bombs.py); more is refused before anything is decoded.
MAX_RENDER_FRAME_BYTES = 48 * 1024 * 1024
# Pixels converted to float64 at a time (8 MB per temporary array).
_BLOCK_PIXELS = 1 << 20


class RenderError(ValueError):
    """The instance cannot be shown as a picture (message safe to return, no PHI)."""


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): centre, width and function."""

    center: float
    width: float
    function: VoiFunction = "LINEAR"

    @classmethod
    def parse(cls, text: str) -> Window:
        """PS3.18 8.3.5.1.3 ``window=center,width,function`` (function linear, linear-exact, sigmoid)."""
        fields = [f.strip() for f in text.split(",")]
        if len(fields) not in (2, 3):
            raise RenderError("window must be center,width[,function]")
        try:
            center, width = float(fields[0]), float(fields[1])
        except ValueError as exc:
            raise RenderError("window center and width must be numbers") from exc
        function = (fields[2] if len(fields) == 3 else "linear").upper().replace("-", "_")
        if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
            raise RenderError("window function must be linear, linear-exact or sigmoid")
        window = cls(center, width, function)  # type: ignore[arg-type]
        window.check()
        return window

    def check(self) -> None:
        """Raise RenderError for a window that is not finite or too narrow (PS3.3 C.11.2.1.2)."""
        if not np.isfinite(self.center) or not np.isfinite(self.width):
            raise RenderError("window center and width must be finite")
        minimum = 1.0 if self.function == "LINEAR" else 0.0
        if self.width < minimum or (self.function != "LINEAR" and self.width == 0):
            raise RenderError("window width is too small")

    def apply(self, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Values mapped to 0..1 by the standard's formulas."""
        c, w = self.center, self.width
        if self.function == "SIGMOID":
            out: np.ndarray[Any, Any] = 1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
            return out
        if self.function == "LINEAR_EXACT":
            return np.clip((values - c) / w + 0.5, 0.0, 1.0)
        # LINEAR: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped at c - 0.5 -/+ (w - 1) / 2
        if w == 1:
            return (values > c - 0.5).astype(np.float64)
        return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


@dataclass(frozen=True)
class Picture:
    """A rendered image (PS3.18 8.3.5): its encoded bytes, media type and size in pixels."""

    body: bytes
    media_type: str
    columns: int
    rows: int


def read_dataset(data: bytes) -> Dataset:
    """The instance parsed within common.decode_limits, its first frame within the render budget.

    Raises ``common.decode_limits.LimitExceeded`` (413) before anything large is allocated or
    decoded, :class:`RenderError` when it is not DICOM or has no pixel data.
    """
    from common.decode_limits import LimitExceeded

    try:
        ds = read_part10(data, stop_before_pixels=False)
    except LimitExceeded:
        raise
    except (InvalidDicomError, EOFError, ValueError, OSError, struct.error) as exc:
        raise RenderError("the instance could not be read as DICOM") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise RenderError("the instance has no pixel data")
    check_pixel_budget(ds, 1, MAX_RENDER_FRAME_BYTES)
    return ds


def first_frame(ds: Dataset) -> np.ndarray[Any, Any]:
    """The first frame as decoded by pydicom (rows x columns [x samples])."""
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        if frames > 1:
            from pydicom.pixels.utils import pixel_array

            arr = pixel_array(ds, index=0)
        else:
            arr = ds.pixel_array
    except NotImplementedError as exc:
        raise RenderError("no installed decoder supports this transfer syntax") from exc
    except (RuntimeError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise RenderError(f"the pixel data could not be decoded: {type(exc).__name__}") from exc
    return np.asarray(arr)


def _header_window(ds: Dataset) -> Window | None:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None or center == "" or width == "":
        return None
    try:
        c = float(center[0] if _multi(center) else center)
        w = float(width[0] if _multi(width) else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"
    window = Window(c, w, function)  # type: ignore[arg-type]
    try:
        window.check()
    except RenderError:
        return None
    return window


def _multi(value: Any) -> bool:
    return isinstance(value, MultiValue | list | tuple)


def _voi_lut(item: Dataset, values: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The first VOI LUT (PS3.3 C.11.2.1.1), output scaled to 0..1 by its bits per entry.

    (pydicom's apply_voi_lut wraps input values above 255 for 8-bit LUTs, so it is done here.)
    """
    entries, first_mapped, bits = (int(v) for v in item.LUTDescriptor)
    entries = entries or 65536
    if not 8 <= bits <= 16:
        raise ValueError("unsupported VOI LUT depth")
    element = item["LUTData"]
    if isinstance(element.value, bytes):
        lut = np.asarray(struct.unpack_from(f"<{entries}H", element.value), dtype=np.float64)
    else:
        lut = np.asarray(list(element.value) if _multi(element.value) else [element.value], dtype=np.float64)
    if lut.size < entries:
        raise ValueError("VOI LUT shorter than its descriptor")
    index = np.clip(np.rint(values).astype(np.int64) - first_mapped, 0, entries - 1)
    shown: np.ndarray[Any, Any] = np.clip(lut[index] / float(2**bits - 1), 0.0, 1.0)
    return shown


def _rows_per_block(arr: np.ndarray[Any, Any]) -> int:
    per_row = max(1, int(np.prod(arr.shape[1:])))
    return max(1, _BLOCK_PIXELS // per_row)


def _modality_range(ds: Dataset, arr: np.ndarray[Any, Any]) -> tuple[float, float]:
    """Minimum and maximum of the frame after the Modality LUT, a block of rows at a time."""
    low, high = np.inf, -np.inf
    step = _rows_per_block(arr)
    for row in range(0, arr.shape[0], step):
        values = np.asarray(apply_modality_lut(arr[row : row + step], ds), dtype=np.float64)
        low, high = min(low, float(values.min())), max(high, float(values.max()))
    return low, high


def _usable_voi_lut(ds: Dataset) -> Dataset | None:
    if "VOILUTSequence" not in ds or len(ds.VOILUTSequence) == 0:
        return None
    item: Dataset = ds.VOILUTSequence[0]
    try:
        _voi_lut(item, np.zeros(1, dtype=np.float64))
    except (AttributeError, IndexError, KeyError, ValueError, TypeError, struct.error):
        return None
    return item


def grayscale(ds: Dataset, arr: np.ndarray[Any, Any], window: Window | None) -> np.ndarray[Any, Any]:
    """8-bit display values of one grayscale frame.

    The float64 work runs on blocks of rows (``_BLOCK_PIXELS``), so its temporaries stay a few
    MB whatever the frame size; only the 8-bit result is frame-sized.
    """
    chosen = window or _header_window(ds)
    lut = _usable_voi_lut(ds) if chosen is None else None
    low, high = _modality_range(ds, arr) if chosen is None and lut is None else (0.0, 0.0)
    invert = str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1"
    out = np.empty(arr.shape, dtype=np.uint8)
    step = _rows_per_block(arr)
    for row in range(0, arr.shape[0], step):
        values = np.asarray(apply_modality_lut(arr[row : row + step], ds), dtype=np.float64)
        if chosen is not None:
            shown = chosen.apply(values)
        elif lut is not None:
            shown = _voi_lut(lut, values)
        elif high > low:
            shown = (values - low) / (high - low)
        else:
            shown = np.zeros(values.shape, dtype=np.float64)
        if invert:
            shown = 1.0 - shown
        out[row : row + step] = np.rint(shown * 255.0)
    return out


def color(ds: Dataset, arr: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """8-bit RGB of one colour frame (pydicom already converted YBR to RGB)."""
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if photometric == "PALETTE COLOR":
        try:
            arr = np.asarray(apply_color_lut(arr, ds))
        except (ValueError, AttributeError, KeyError) as exc:
            raise RenderError("the palette colour lookup table is not usable") from exc
        bits = 16 if arr.dtype.itemsize > 1 else 8
    else:
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    if arr.dtype == np.uint8 and bits <= 8:
        return arr
    out = np.empty(arr.shape, dtype=np.uint8)
    step = _rows_per_block(arr)
    for row in range(0, arr.shape[0], step):
        scaled = np.asarray(arr[row : row + step], dtype=np.float64) / float(2**bits - 1)
        out[row : row + step] = np.rint(np.clip(scaled, 0.0, 1.0) * 255.0)
    return out


def to_image(ds: Dataset, window: Window | None = None) -> Image.Image:
    """The first frame as an 8-bit image: grayscale through the VOI window, or RGB.

    Colour handles RGB (pydicom converts YBR) and PALETTE COLOR (PS3.3 C.7.6.3).
    Raises RenderError for other layouts.
    """
    arr = first_frame(ds)
    samples = int(ds.get("SamplesPerPixel") or 1)
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    if samples == 3 and arr.ndim == 3:
        return Image.fromarray(color(ds, arr), mode="RGB")
    if samples == 1 and photometric == "PALETTE COLOR" and arr.ndim == 2:
        return Image.fromarray(color(ds, arr), mode="RGB")
    if samples == 1 and arr.ndim == 2:
        return Image.fromarray(grayscale(ds, arr, window), mode="L")
    raise RenderError("unsupported pixel layout")


def encode(image: Image.Image, media_type: str, *, quality: int = 90) -> bytes:
    """Encode ``image`` as PNG or JPEG (``quality``: JPEG only); raises RenderError for other types."""
    buffer = io.BytesIO()
    if media_type == PNG:
        image.save(buffer, format="PNG", optimize=False, compress_level=6)
    elif media_type == JPEG:
        image.convert("RGB" if image.mode == "RGB" else "L").save(buffer, format="JPEG", quality=quality)
    else:
        raise RenderError(f"unsupported media type {media_type}")
    return buffer.getvalue()


def render(
    data: bytes,
    media_type: str = PNG,
    *,
    window: Window | None = None,
    quality: int = 90,
    max_size: int | None = None,
    viewport: tuple[int, int] | None = None,
) -> Picture:
    """The first frame of a DICOM instance (Part 10 bytes) as a PNG or JPEG picture.

    ``max_size`` shrinks the picture (keeping its aspect ratio) so that neither side exceeds it;
    ``viewport`` (PS3.18 ``viewport=vw,vh``) scales it, up or down, to fit ``vw`` x ``vh``.
    """
    ds = read_dataset(data)
    image = to_image(ds, window)
    if max_size is not None and max(image.size) > max_size:
        image.thumbnail((max_size, max_size), Image.Resampling.LANCZOS)
    if viewport is not None:
        scale = min(viewport[0] / image.width, viewport[1] / image.height)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS)
    return Picture(encode(image, media_type, quality=quality), media_type, image.width, image.height)


def parse_viewport(text: str) -> tuple[int, int]:
    """PS3.18 8.3.5.1.2 ``viewport=vw,vh`` (the cropping form with sx,sy,sw,sh is not offered)."""
    fields = [f.strip() for f in text.split(",")]
    if len(fields) != 2:
        raise RenderError("viewport must be vw,vh (cropping is not supported)")
    try:
        width, height = int(fields[0]), int(fields[1])
    except ValueError as exc:
        raise RenderError("viewport width and height must be integers") from exc
    if not (1 <= width <= MAX_SIZE and 1 <= height <= MAX_SIZE):
        raise RenderError(f"viewport width and height must be 1..{MAX_SIZE}")
    return width, height


def choose_media_type(accept: str | None) -> str | None:
    """PNG or JPEG from an Accept header or ``accept=`` value; None when neither is acceptable.

    Without a preference (absent, ``*/*``, ``image/*``) the answer is PNG. Parsed by the
    query function's one Accept parser (query.accept: q-values, q=0 excludes).
    """
    from query.accept import parse

    for media_range in parse(accept if accept and accept.strip() else None):
        if media_range.media_type in MEDIA_TYPES:
            return media_range.media_type
        if media_range.media_type in ("*/*", "image/*"):
            return PNG
    return None
