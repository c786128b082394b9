"""GeoPlonk wire protocol, version 1: the single definition shared by server and clients.

A message is a ZeroMQ multipart message: one UTF-8 JSON header frame followed
by zero or more raw binary frames ("blobs": image bytes, GeoTIFF bytes,
GeoPackage bytes).  Nothing is ever pickled.  A ROUTER socket sees the peer's
identity frame(s) before the header; `split_envelope` separates them.

This module imports only the standard library so that it runs in QGIS's Python,
in the torch-side server and in `geoplonk locate` alike.  docs/protocol.md
documents it for people writing their own clients.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

PROTOCOL_VERSION = 1

# Limits a server enforces and reports in `info`; clients use them to fail early.
MAX_HEADER_BYTES = 256 * 1024
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_IMAGES_PER_REQUEST = 256
MAX_MESSAGE_BYTES = 512 * 1024 * 1024

# Client -> server
INFO = "info"
GEOLOCATE = "geolocate"
CANCEL = "cancel"
RENEW = "renew"  # keeps an open request's lease alive (the reference client sends one every heartbeat_s)
# Server -> client
PROGRESS = "progress"
RESULT = "result"
JOINT = "joint"  # the one combined map of a request with the option `joint` (after its photos' results)
DONE = "done"
ERROR = "error"
# `info` is also the reply type to an `info` request.

CLIENT_TYPES = frozenset({INFO, GEOLOCATE, CANCEL, RENEW})
SERVER_TYPES = frozenset({INFO, PROGRESS, RESULT, JOINT, DONE, ERROR})

# Per-photo outcome in a `result` message.
STATUS_OK = "ok"
STATUS_FAILED = "failed"
STATUS_CANCELLED = "cancelled"

# Error codes carried by `error` messages and failed results.
E_MALFORMED = "malformed"
E_VERSION = "version_mismatch"
E_UNKNOWN_TYPE = "unknown_type"
E_TOO_LARGE = "too_large"
E_BAD_OPTION = "bad_option"
E_BAD_IMAGE = "bad_image"
E_MODEL = "model_unavailable"
E_INTERNAL = "internal"
E_CANCELLED = "cancelled"
E_BUSY = "busy"  # the queue is full: nothing was accepted, retry later (the error carries `retry_after_s`)

# A photo's stages, in the order the server runs them (`progress` stage; its `share` says how far the photo is at
# a stage's start and end), and every stage a request's progress may name (`info.stages`).
PHOTO_STAGES = ("decode", "embed", "sample", "localizability", "density", "regions", "places", "write")
STAGES = ("queued", "load", *PHOTO_STAGES, "joint")

# Liveness: the server repeats progress every HEARTBEAT_S; a client renews each open request's lease at least
# as often, and a request not renewed for LEASE_HEARTBEATS heartbeats is cancelled (its client is gone).
HEARTBEAT_S = 1.0
LEASE_HEARTBEATS = 10
# Queue bounds (photos not yet answered, in open requests): beyond them a `geolocate` gets `busy`.
QUEUE_PHOTOS_PER_CLIENT = 512
QUEUE_PHOTOS_TOTAL = 2048
QUEUE_BYTES_TOTAL = 2 * 512 * 1024 * 1024

# Where `geoplonk serve` listens unless told otherwise, and where clients look for it.
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"

# Sampler names the server accepts (the engine's solvers register under these names). The default, rk3 in
# DEFAULT_STEPS steps (18 network evaluations), lands nearer the exact endpoints than the reference's Euler in 32
# in about a tenth of its time; "euler" at 32 steps is the reference's own sampler (docs/samplers.md).
SOLVERS = ("euler", "heun", "midpoint", "rk3", "rk4")
DEFAULT_SOLVER = "rk3"
DEFAULT_STEPS = 6
PRECISIONS = ("bf16", "fp32")


def is_number(value: Any) -> bool:
    """A JSON number: int or float, and not a bool (which Python counts as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class NumberOption:
    """A numeric `geolocate` option: its type, default and inclusive range, for validators and forms alike."""

    name: str
    kind: type  # int or float
    default: float | int | None
    minimum: float
    maximum: float
    label: str

    def accepts(self, value: Any) -> bool:
        if not is_number(value):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        return self.minimum <= value <= self.maximum

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.maximum >= 2**62:
            return f"{what} of at least {self.minimum:g}"
        return f"{what} in [{self.minimum:g}, {self.maximum:g}]"


# The numeric options, declared once: the server validates with them, and the settings dialog,
# Processing's parameters and the command line take their ranges and defaults from them.
SAMPLES = NumberOption("samples", int, 1024, 16, 65536, "Samples drawn from the distribution")
STEPS = NumberOption("steps", int, DEFAULT_STEPS, 1, 1000, "ODE solver steps")
# Guidance w of the distribution; None: the model's calibrated w (0 if it has none).
CFG = NumberOption("cfg", float, None, -1.0, 20.0, "Guidance w of the distribution")
RESOLUTION = NumberOption("resolution", float, 0.25, 0.05, 10.0, "Raster cell size (degrees)")
TOP_K = NumberOption("top_k", int, 5, 1, 50, "Top places reported")
SEED = NumberOption("seed", int, 0, 0, 2**63 - 1, "Random seed")
# A result's best guess is picked among GUESS_SAMPLES draws at guidance GUESS_CFG, drawn by GUESS_SOLVER in
# GUESS_STEPS steps whatever the request's sampler (not options: fixed).  The guided field ends sharper than the
# distribution's: Euler on the reference's time grid picks the same guesses as at 32 steps, where the few-step
# solvers on their balanced grid move a fifth of them by over 750 km.
GUESS_SAMPLES = 256
GUESS_CFG = 2.0
GUESS_SOLVER = "euler"
GUESS_STEPS = 16
NUMBER_OPTIONS = {o.name: o for o in (SAMPLES, STEPS, CFG, RESOLUTION, TOP_K, SEED)}
MAX_LEVELS = 8
# The area-of-interest prior's weight of the outside against the inside (0: the map is restricted to the
# area; 1: no prior).  Not among NUMBER_OPTIONS: it means nothing without an `aoi`.
AOI_WEIGHT = NumberOption("aoi_weight", float, 0.0, 0.0, 1.0, "Prior weight outside the area of interest")
# Claims checked per request (a point layer's points), and the vertices of an area of interest: the header's
# MAX_HEADER_BYTES bounds them too (about 10,000 vertices of 12-digit coordinates).
MAX_CLAIMS = 256
MAX_AOI_VERTICES = 10_000
MAX_CLAIM_TEXT = 200
# Where a claim comes from: the photo's EXIF GPS, a point the analyst clicked, a point layer, or typed in.
CLAIM_SOURCES = ("exif", "click", "layer", "user")
# A joint request keeps each photo's draws (not its raster) until the combined map is made.
MAX_JOINT_PHOTOS = 64


def job_units(photos: int, joint: bool = False) -> int:
    """A job's progress units: its photos, and a joint job's combined map, made after the last photo (the
    client's `fraction` and the plugin's bar count the same units)."""
    return photos + (1 if joint else 0)

# Work bounds of one photo, beyond the options' own ranges.  The density raster evaluates every sample's
# kernel at every cell near it, so its time grows with samples x cells (about 7 s per 10^9 on two CPU cores
# for a broad distribution): 2^33 admits the defaults (1024 x 1,036,800 cells at 0.25 degrees) with room
# to spare (8192 samples at 0.25, 1024 at 0.1, 65536 at 1) and refuses what ran for 19 minutes
# (65536 samples at 0.05 degrees: 1.7 x 10^12).  Info's `limits` reports it as `max_sample_cells`.
MAX_SAMPLE_CELLS = 2**33
# Samples (photos x samples per photo) that the sampler carries at once in one unit of work: a request's
# photos are cut into units of at most max(1, MAX_UNIT_SAMPLES // samples) photos (and the server's batch
# size), which bounds the memory of one unit and keeps the queue fair per photo.
MAX_UNIT_SAMPLES = 65536


def raster_cells(resolution: float) -> int:
    """Cells of the global raster at this cell size (360 / r columns x 180 / r rows)."""
    return round(360 / resolution) * round(180 / resolution)


def photos_per_unit(samples: int, batch_size: int) -> int:
    """How many photos of a request one unit of work holds: the batch size, fewer for many samples."""
    return max(1, min(int(batch_size), MAX_UNIT_SAMPLES // max(1, int(samples))))

# Options a `geolocate` request may carry, with their defaults.
DEFAULT_OPTIONS: dict[str, Any] = {
    "model": None,  # None: the server's default model
    "samples": SAMPLES.default,
    "steps": STEPS.default,
    "solver": DEFAULT_SOLVER,
    "precision": PRECISIONS[0],  # the sampler's matmuls: bf16 where the device has bf16 units (else fp32), or fp32
    "cfg": CFG.default,
    "resolution": RESOLUTION.default,
    "levels": [0.5, 0.9, 0.99],  # credible region levels
    "top_k": TOP_K.default,
    "crop": False,  # crop the raster to the 99.9 % mass area
    "seed": SEED.default,
    "claims": [],  # claimed locations checked against the map: [{"lat", "lon", "source", "label"}]
    "claim_exif": False,  # also check each photo's own EXIF GPS position as a claim
    "aoi": None,  # area of interest: a GeoJSON Polygon or MultiPolygon in lon/lat degrees
    "aoi_weight": AOI_WEIGHT.default,  # the prior's weight outside the area against inside (0: restricted to it)
    "joint": False,  # one combined map for all the request's photos (a `joint` message), beside each photo's own
}

# Blob order in a successful `result` message.
RESULT_BLOBS = ("geotiff", "gpkg")


class ProtocolError(ValueError):
    """A message that does not follow this protocol; `code` is one of the E_* codes."""

    def __init__(self, message: str, code: str = E_MALFORMED):
        super().__init__(message)
        self.code = code


@dataclass
class Message:
    """One protocol message: header fields plus binary blobs."""

    type: str
    id: str
    fields: dict[str, Any] = field(default_factory=dict)
    blobs: list[bytes] = field(default_factory=list)

    def header(self) -> dict[str, Any]:
        return {"v": PROTOCOL_VERSION, "type": self.type, "id": self.id, **self.fields}


def new_request_id() -> str:
    return uuid.uuid4().hex


def encode(message: Message) -> list[bytes]:
    """Frames for `message`; the header is compact JSON."""
    header = json.dumps(message.header(), separators=(",", ":"), allow_nan=False)
    return [header.encode("utf-8"), *[bytes(b) for b in message.blobs]]


def decode(frames: list[bytes], allowed_types: frozenset[str] | None = None) -> Message:
    """Parse frames (without envelope) into a Message, or raise ProtocolError naming the problem."""
    if not frames:
        raise ProtocolError("empty message: expected a JSON header frame")
    raw = bytes(frames[0])
    if len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError(
            f"header frame is {len(raw)} bytes, over the {MAX_HEADER_BYTES} byte limit", E_TOO_LARGE
        )
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"header frame is not UTF-8 JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("header frame nests too deeply") from None
    if not isinstance(header, dict):
        raise ProtocolError("header must be a JSON object")
    version = header.pop("v", None)
    if isinstance(version, bool) or not isinstance(version, int) or version != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {version!r} is not supported (this side speaks {PROTOCOL_VERSION})",
            E_VERSION,
        )
    msg_type = header.pop("type", None)
    msg_id = header.pop("id", None)
    if not isinstance(msg_type, str):
        raise ProtocolError("header lacks a string 'type'")
    if not isinstance(msg_id, str) or not msg_id or len(msg_id) > 128:
        raise ProtocolError("header lacks a request 'id' (a non-empty string of at most 128 characters)")
    if allowed_types is not None and msg_type not in allowed_types:
        raise ProtocolError(f"unknown message type {msg_type!r}", E_UNKNOWN_TYPE)
    return Message(msg_type, msg_id, header, [bytes(f) for f in frames[1:]])


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a key given twice is refused (which one counts would be a guess)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ProtocolError(f"header repeats the key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ProtocolError(f"header holds {name}, which is not JSON (no NaN or Infinity)")


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split a ROUTER-received message into (identity envelope, message frames).

    DEALER clients send no empty delimiter, so the envelope is the single identity
    frame; REQ clients add an empty delimiter, which is kept in the envelope so the
    reply routes back correctly.
    """
    if len(frames) < 2:
        return list(frames), []
    if len(frames) >= 3 and frames[1] == b"":
        return list(frames[:2]), list(frames[2:])
    return list(frames[:1]), list(frames[1:])


def validate_options(options: Any) -> dict[str, Any]:
    """Merge `options` over DEFAULT_OPTIONS, checking types and ranges; raise ProtocolError(E_BAD_OPTION)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ProtocolError("'options' must be an object", E_BAD_OPTION)
    unknown = set(options) - set(DEFAULT_OPTIONS)
    if unknown:
        raise ProtocolError(f"unknown option(s): {', '.join(sorted(unknown))}", E_BAD_OPTION)
    merged = {**DEFAULT_OPTIONS, **options}

    def check(name: str, ok: bool, what: str) -> None:
        if not ok:
            raise ProtocolError(f"option '{name}' must be {what}, got {merged[name]!r}", E_BAD_OPTION)

    check("model", merged["model"] is None or isinstance(merged["model"], str), "a model name or null")
    for option in NUMBER_OPTIONS.values():
        value = merged[option.name]
        if option.default is None and value is None:
            continue
        check(option.name, option.accepts(value), ("null or " if option.default is None else "") + option.describe())
    check("solver", merged["solver"] in SOLVERS, "one of " + ", ".join(SOLVERS))
    check("precision", merged["precision"] in PRECISIONS, " or ".join(f'"{p}"' for p in PRECISIONS))
    check(
        "levels",
        isinstance(merged["levels"], list)
        and 0 < len(merged["levels"]) <= MAX_LEVELS
        and all(is_number(v) and 0 < v < 1 for v in merged["levels"]),
        f"a list of 1 to {MAX_LEVELS} probabilities in (0, 1)",
    )
    check("crop", isinstance(merged["crop"], bool), "true or false")
    for name in ("claim_exif", "joint"):
        check(name, isinstance(merged[name], bool), "true or false")
    check("aoi_weight", AOI_WEIGHT.accepts(merged["aoi_weight"]), AOI_WEIGHT.describe())
    merged["claims"] = validate_claims(merged["claims"])
    if merged["aoi"] is not None:
        validate_aoi(merged["aoi"])
    cells = raster_cells(merged["resolution"])
    if merged["samples"] * cells > MAX_SAMPLE_CELLS:
        most = MAX_SAMPLE_CELLS // cells
        raise ProtocolError(
            f"options 'samples' {merged['samples']} x 'resolution' {merged['resolution']:g} ask the density raster "
            f"for {merged['samples']:,} samples x {cells:,} cells = {merged['samples'] * cells:.3g}, over the "
            f"limit max_sample_cells = {MAX_SAMPLE_CELLS:,}: at this resolution at most "
            + (f"{most:,} samples" if most >= SAMPLES.minimum else "no number of samples")
            + "; use fewer samples or a coarser resolution",
            E_BAD_OPTION,
        )
    merged["levels"] = sorted(float(v) for v in merged["levels"])
    merged["aoi_weight"] = float(merged["aoi_weight"])
    return merged


def _bad(message: str) -> ProtocolError:
    return ProtocolError(message, E_BAD_OPTION)


def validate_claims(claims: Any) -> list[dict[str, Any]]:
    """The `claims` option with every claim complete ({"lat", "lon", "source", "label"}); ProtocolError names
    the claim and the problem."""
    if not isinstance(claims, list) or len(claims) > MAX_CLAIMS:
        raise _bad(f"option 'claims' must be a list of at most {MAX_CLAIMS} claims, got {_short(claims)}")
    out = []
    for i, claim in enumerate(claims):
        where = f"option 'claims'[{i}]"
        if not isinstance(claim, dict):
            raise _bad(f"{where} must be an object {{\"lat\", \"lon\", \"source\", \"label\"}}, got {_short(claim)}")
        unknown = set(claim) - {"lat", "lon", "source", "label"}
        if unknown:
            raise _bad(f"{where} has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        for key, limit in (("lat", 90.0), ("lon", 180.0)):
            value = claim.get(key)
            if not is_number(value) or not -limit <= value <= limit:
                raise _bad(f"{where} needs '{key}' as a number in [{-limit:g}, {limit:g}] degrees, got {_short(value)}")
        source = claim.get("source", "user")
        if source not in CLAIM_SOURCES:
            raise _bad(f"{where} 'source' must be one of {', '.join(CLAIM_SOURCES)}, got {_short(source)}")
        label = claim.get("label", "")
        if not isinstance(label, str) or len(label) > MAX_CLAIM_TEXT:
            raise _bad(f"{where} 'label' must be a string of at most {MAX_CLAIM_TEXT} characters")
        out.append({"lat": float(claim["lat"]), "lon": float(claim["lon"]), "source": source, "label": label})
    return out


def validate_aoi(aoi: Any) -> None:
    """The `aoi` option's shape: a GeoJSON Polygon or MultiPolygon in lon/lat degrees, each ring closed with at
    least 4 positions, longitudes in [-360, 360] (a ring may run past the antimeridian), latitudes in
    [-90, 90], at most MAX_AOI_VERTICES positions.  Whether the rings cross themselves is the server's check
    (model_server.products.aoi), which needs a geometry library."""
    if not isinstance(aoi, dict) or aoi.get("type") not in ("Polygon", "MultiPolygon"):
        raise _bad("option 'aoi' must be a GeoJSON geometry object of type Polygon or MultiPolygon, got "
                   + _short(aoi.get("type") if isinstance(aoi, dict) else aoi))
    unknown = set(aoi) - {"type", "coordinates", "bbox", "crs"}
    if unknown:
        raise _bad(f"option 'aoi' has unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    polygons = aoi.get("coordinates")
    if aoi["type"] == "Polygon":
        polygons = [polygons]
    if not isinstance(polygons, list) or not polygons:
        raise _bad("option 'aoi' needs 'coordinates': a list of polygons, each a list of rings")
    vertices = 0
    for p, rings in enumerate(polygons):
        if not isinstance(rings, list) or not rings:
            raise _bad(f"option 'aoi': polygon {p + 1} must be a non-empty list of rings")
        for r, ring in enumerate(rings):
            where = f"option 'aoi': polygon {p + 1}, ring {r + 1}"
            if not isinstance(ring, list) or len(ring) < 4:
                raise _bad(f"{where} must be a list of at least 4 [lon, lat] positions (closed)")
            for position in ring:
                if (not isinstance(position, list) or len(position) not in (2, 3)
                        or not all(is_number(v) for v in position)):
                    raise _bad(f"{where} holds {_short(position)}, not a [lon, lat] position")
                if not (-360 <= position[0] <= 360 and -90 <= position[1] <= 90):
                    raise _bad(f"{where} holds {_short(position)}: longitude must be in [-360, 360] and latitude "
                               "in [-90, 90] degrees (GeoJSON order is [lon, lat])")
            if ring[0][:2] != ring[-1][:2]:
                raise _bad(f"{where} is not closed: its first and last positions differ")
            vertices += len(ring)
            if vertices > MAX_AOI_VERTICES:
                raise _bad(f"option 'aoi' has over {MAX_AOI_VERTICES:,} positions: simplify the area first")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Constructors: the one place each message's shape is spelled out.


def info_request(request_id: str | None = None) -> Message:
    return Message(INFO, request_id or new_request_id())


def geolocate_request(
    images: list[tuple[str, bytes]], options: dict[str, Any] | None = None, request_id: str | None = None
) -> Message:
    """`images` is a list of (display name, file bytes)."""
    return Message(
        GEOLOCATE,
        request_id or new_request_id(),
        {"images": [{"name": name} for name, _ in images], "options": options or {}},
        [data for _, data in images],
    )


def cancel_request(request_id: str) -> Message:
    return Message(CANCEL, request_id)


def renew_request(request_id: str) -> Message:
    return Message(RENEW, request_id)


def progress_message(
    request_id: str, stage: str, done: int, total: int, index: int | None = None, name: str | None = None,
    share: list[float] | None = None,
) -> Message:
    return Message(PROGRESS, request_id, {"stage": stage, "done": done, "total": total, "index": index, "name": name,
                                          "share": share})


def result_message(
    request_id: str,
    index: int,
    name: str,
    status: str,
    summary: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
    blobs: list[bytes] | None = None,
) -> Message:
    fields: dict[str, Any] = {"index": index, "name": name, "status": status}
    if summary is not None:
        fields["summary"] = summary
        fields["blobs"] = list(RESULT_BLOBS)
    if error is not None:
        fields["error"] = error
    return Message(RESULT, request_id, fields, blobs or [])


def joint_message(
    request_id: str,
    status: str,
    summary: dict[str, Any] | None = None,
    error: dict[str, str] | None = None,
    blobs: list[bytes] | None = None,
) -> Message:
    """The combined map of a `joint` request: like a `result`, for all its photos at once."""
    fields: dict[str, Any] = {"status": status}
    if summary is not None:
        fields["summary"] = summary
        fields["blobs"] = list(RESULT_BLOBS)
    if error is not None:
        fields["error"] = error
    return Message(JOINT, request_id, fields, blobs or [])


def done_message(request_id: str, ok: int, failed: int, cancelled: int, joint: str | None = None) -> Message:
    fields: dict[str, Any] = {"ok": ok, "failed": failed, "cancelled": cancelled}
    if joint is not None:
        fields["joint"] = joint
    return Message(DONE, request_id, fields)


def error_message(request_id: str, code: str, message: str) -> Message:
    return Message(ERROR, request_id, {"code": code, "message": message})
