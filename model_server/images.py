"""Safe image decoding and EXIF GPS, shared by the server and the dataset readers.

Every failure becomes an ImageError naming the problem, so one bad photo fails
alone while the rest of a batch goes on.
"""

from __future__ import annotations

import io
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


def _dms_to_degrees(dms, ref: str) -> float:
    d, m, s = (_rational_to_float(v) for v in dms)
    deg = d + m / 60.0 + s / 3600.0
    return -deg if ref in ("S", "W") else deg


def read_exif_gps(data: bytes | Image.Image) -> GPS | None:
    """GPS position from EXIF, or None when absent or unreadable (never raises)."""
    try:
        image = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
        gps = image.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        if not gps:
            return None
        lat = _dms_to_degrees(gps[ExifTags.GPS.GPSLatitude], gps.get(ExifTags.GPS.GPSLatitudeRef, "N"))
        lon = _dms_to_degrees(gps[ExifTags.GPS.GPSLongitude], gps.get(ExifTags.GPS.GPSLongitudeRef, "E"))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            return None
        return GPS(lat, lon)
    except Exception:  # noqa: BLE001 - EXIF in the wild is arbitrarily broken; GPS is optional
        return None


def exif_with_gps(lat: float, lon: float, base: Image.Exif | None = None) -> Image.Exif:
    """An Exif block carrying this position, for writing geotagged JPEGs (datasets, tests)."""

    def to_dms(value: float) -> tuple[float, float, float]:
        value = abs(value)
        d = int(value)
        m = int((value - d) * 60)
        s = round((value - d - m / 60) * 3600, 4)
        return (float(d), float(m), float(s))

    exif = base if base is not None else Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSVersionID: b"\x02\x03\x00\x00",
        ExifTags.GPS.GPSLatitudeRef: "N" if lat >= 0 else "S",
        ExifTags.GPS.GPSLatitude: to_dms(lat),
        ExifTags.GPS.GPSLongitudeRef: "E" if lon >= 0 else "W",
        ExifTags.GPS.GPSLongitude: to_dms(lon),
    }
    return exif
