"""Safe image decoding and EXIF GPS, shared by the server and the dataset readers.

Every failure becomes an ImageError naming the problem, so one bad photo fails
alone while the rest of a batch goes on.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF/AVIF photos from phones
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - optional at import, required by the server extra
    pillow_heif = None

# Decompression bomb guard: 64 megapixels is ~ an 8K x 8K photo; beyond that we refuse.
MAX_PIXELS = 64_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# Work guard: the encoders scale the shorter side up or down to a fixed size (224-336 pixels), so the
# longer side grows with the aspect ratio: a 1 x 180,000 PNG of 432 bytes became a 224 x 40 million pixel
# image (24 GB).  20:1 admits every real panorama (a full 360 x 180 degree one is 2:1, a stitched strip
# rarely over 10:1) and bounds the resized image at 20 x 336 x 336 = 2.3 megapixels.
MAX_ASPECT_RATIO = 20
SUPPORTED_FORMATS = ("JPEG", "PNG", "TIFF", "WEBP", "HEIF", "AVIF", "BMP", "GIF", "MPO")


class ImageError(ValueError):
    """A photo that cannot be used; the message says why in plain words."""


@dataclass(frozen=True)
class GPS:
    lat: float
    lon: float


def decode_image(data: bytes, max_bytes: int | None = None) -> Image.Image:
    """Bytes -> RGB image with EXIF orientation applied, or ImageError."""
    if not data:
        raise ImageError("the file is empty (0 bytes)")
    if max_bytes is not None and len(data) > max_bytes:
        raise ImageError(f"the file is {len(data) / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in SUPPORTED_FORMATS:
                raise ImageError(f"unsupported image format {image.format!r}")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(
                    f"image is {width} x {height} pixels, over the {MAX_PIXELS // 1_000_000} megapixel limit "
                    "(possible decompression bomb)"
                )
            if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
                raise ImageError(
                    f"image is {width} x {height} pixels: its aspect ratio is over the {MAX_ASPECT_RATIO}:1 limit "
                    "(a photo this narrow cannot be geolocated, and scaling it for the model would take "
                    "unbounded memory)"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image refused as a possible decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageError("not a recognised image file (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"the image data is corrupt or truncated: {exc}") from None


def _rational_to_float(value) -> float:
    try:
        return float(value)
    except TypeError:
        num, den = value
        return float(num) / float(den)


class ExifGPSError(ValueError):
    """EXIF GPS present but unusable; the message says why."""


def _dms_to_degrees(dms, ref: str, what: str, limit: float) -> float:
    d, m, s = (_rational_to_float(v) for v in dms)
    if not all(math.isfinite(v) and v >= 0 for v in (d, m, s)):
        raise ExifGPSError(f"GPS {what} {d}/{m}/{s} is not a set of non-negative degrees, minutes, seconds")
    # 60 seconds is a writer's rounding of 59.99... (common, and what exif_with_gps once wrote); over that is wrong.
    if m >= 60 or s > 60:
        raise ExifGPSError(f"GPS {what} has {m:g} minutes and {s:g} seconds (minutes under 60, seconds at most 60)")
    deg = d + m / 60.0 + s / 3600.0
    if deg > limit:
        raise ExifGPSError(f"GPS {what} {deg:g} degrees is over {limit:g}")
    if ref not in ("N", "S", "E", "W"):
        raise ExifGPSError(f"GPS {what} reference {ref!r} is not N, S, E or W")
    return -deg if ref in ("S", "W") else deg


def _ref(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    return str(value).strip("\x00 ").upper()


def exif_gps(data: bytes | Image.Image) -> tuple[GPS | None, str | None]:
    """(GPS position from EXIF or None, None) or (None, why the EXIF GPS present is unusable). Never raises.

    No GPS block, or a block without latitude and longitude, is (None, None): nothing to report.
    Out of range values (latitude over 90, longitude over 180, minutes of 60 or more, seconds over 60) are
    refused with a reason, never dropped silently nor wrapped around.
    """
    try:
        image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
        gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        if not gps or ExifTags.GPS.GPSLatitude not in gps or ExifTags.GPS.GPSLongitude not in gps:
            return None, None
    except Exception:  # noqa: BLE001 - EXIF in the wild is arbitrarily broken; GPS is optional
        return None, None
    try:
        lat = _dms_to_degrees(gps[ExifTags.GPS.GPSLatitude], _ref(gps.get(ExifTags.GPS.GPSLatitudeRef, "N")),
                              "latitude", 90.0)
        lon = _dms_to_degrees(gps[ExifTags.GPS.GPSLongitude], _ref(gps.get(ExifTags.GPS.GPSLongitudeRef, "E")),
                              "longitude", 180.0)
        if _ref(gps.get(ExifTags.GPS.GPSLatitudeRef, "N")) not in ("N", "S"):
            raise ExifGPSError("GPS latitude reference is not N or S")
        if _ref(gps.get(ExifTags.GPS.GPSLongitudeRef, "E")) not in ("E", "W"):
            raise ExifGPSError("GPS longitude reference is not E or W")
        return GPS(lat, lon), None
    except ExifGPSError as exc:
        return None, f"EXIF GPS ignored: {exc}"
    except Exception as exc:  # noqa: BLE001 - unreadable values (wrong types, zero denominators)
        return None, f"EXIF GPS ignored: unreadable position ({type(exc).__name__}: {exc})"


def read_exif_gps(data: bytes | Image.Image) -> GPS | None:
    """GPS position from EXIF, or None when absent, unreadable or out of range (never raises)."""
    return exif_gps(data)[0]


def exif_with_gps(lat: float, lon: float, base: Image.Exif | None = None) -> Image.Exif:
    """An Exif block carrying this position, for writing geotagged JPEGs (datasets, tests)."""

    def to_dms(value: float) -> tuple[float, float, float]:
        total = round(abs(value) * 3600, 4)  # in seconds, rounded once, so no part rounds up to 60
        d, rest = divmod(total, 3600)
        m, s = divmod(rest, 60)
        return (float(d), float(m), round(float(s), 4))

    exif = base if base is not None else Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
        ExifTags.GPS.GPSLatitude: to_dms(lat),
        ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
        ExifTags.GPS.GPSLongitude: to_dms(lon),
    }
    return exif
