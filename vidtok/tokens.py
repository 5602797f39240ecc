"""Video files in, tokens or reconstructions out: the token file format and file-level encode / decode / reconstruct.

    vidtok encode bikes.mp4 -o bikes.tokens --checkpoint outputs/train/stage2/final
    vidtok decode bikes.tokens -o rec.mp4
    vidtok reconstruct bikes.mp4 -o rec.mp4 --side-by-side

A token file (its format: vidtok.formats) is a safetensors file with one tensor, `indices` (int32, (1, t, h, w))
for discrete models or `latents` (float32, (1, z, t, h, w)) otherwise, and string metadata that makes it
self-contained: the model (checkpoint folder + weights sha256, or a preset name), its config, the source file, fps,
frame count and size, the pre-processing (resize, padding) and a sha256 over the header and the tensor, so a
changed byte of either is caught; every size read back is checked against the tensor before anything decodes.

Everything streams: frames are decoded, encoded, decoded and written chunk by chunk (`vidtok.model.streaming`), so
memory does not grow with the video length. Outputs are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vidtok._files import atomic_path, resolve_device
from vidtok.data.video import FrameGrid, VideoWriter, frame_grid
from vidtok.formats import (
    TOKEN_FORMAT,
    TOKEN_FORMAT_VERSION,
    TokenFileError,
    parse_count,
    parse_fraction,
    read_token_file,
    token_content_sha256,
)
from vidtok.metrics import psnr, ssim
from vidtok.model.kernels import has_native
from vidtok.model.streaming import TileSpec, iter_decode, iter_encode
from vidtok.model.vidtok import VidTok, load_pretrained, save_safetensors

# ================================================================================================= model choice


@dataclass(frozen=True)
class ModelRef:
    """Which weights: a checkpoint folder (with its weights sha256) or a preset with seeded random weights."""

    preset: str | None = None
    checkpoint: str | None = None
    weights_sha256: str | None = None

    def describe(self) -> str:
        return f"checkpoint {self.checkpoint}" if self.checkpoint else f"preset {self.preset} (random weights, seed 0)"


def load_model(preset: str | None = None, checkpoint: str | os.PathLike | None = None) -> tuple[VidTok, ModelRef]:
    """A checkpoint folder, or a preset with random weights (seed 0, reproducible; a warning says it is untrained)."""
    if checkpoint is not None:
        model = load_pretrained(checkpoint)
        sha = json.loads((Path(checkpoint) / "config.json").read_text()).get("weights_sha256")
        return model, ModelRef(preset=model.name, checkpoint=str(Path(checkpoint).resolve()), weights_sha256=sha)
    if preset is None:
        raise ValueError("give --checkpoint DIR (trained weights) or --preset NAME (random weights, for smoke tests)")
    warnings.warn(
        f"preset {preset} has random weights (seed 0): the output is not a meaningful reconstruction", stacklevel=2
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = VidTok.from_preset(preset)
    return model, ModelRef(preset=preset)


# ================================================================================================= frames <-> tensors


@dataclass(frozen=True)
class Geometry:
    """How source frames become model input: optional resize to (height, width), then replicate padding at the
    bottom/right up to multiples of the spatial factor (cropped away after decoding)."""

    source_height: int
    source_width: int
    height: int  # after resize, before padding
    width: int
    pad_bottom: int
    pad_right: int

    @classmethod
    def plan(cls, source_hw: tuple[int, int], factor: int, resolution: str | int | None) -> Geometry:
        sh, sw = source_hw
        if resolution is None:
            h, w = sh, sw
        elif isinstance(resolution, int) or str(resolution).isdigit():
            short = int(resolution)  # short side -> resolution, aspect kept, long side rounded to even
            scale = short / min(sh, sw)
            h, w = (short, 2 * round(sw * scale / 2)) if sh <= sw else (2 * round(sh * scale / 2), short)
        else:
            try:
                h, w = (int(v) for v in str(resolution).lower().split("x"))
            except ValueError:
                raise ValueError(f"--resolution must be N (short side) or HxW, got {resolution!r}") from None
        if h < 1 or w < 1:
            raise ValueError(f"resolution {h}x{w} is empty")
        return cls(sh, sw, h, w, (-h) % factor, (-w) % factor)

    def to_model(self, frames: np.ndarray, device: torch.device) -> torch.Tensor:
        """(t, H, W, 3) uint8 -> (1, 3, t, H', W') float in [-1, 1]."""
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(3, 0, 1, 2).float()  # (3, t, H, W)
        if (self.height, self.width) != (self.source_height, self.source_width):
            x = F.interpolate(x, size=(self.height, self.width), mode="bilinear", antialias=True, align_corners=False)
        x = x.unsqueeze(0) / 127.5 - 1.0
        if self.pad_bottom or self.pad_right:
            b, c, t, h, w = x.shape
            x = F.pad(x.reshape(b, c * t, h, w), (0, self.pad_right, 0, self.pad_bottom), mode="replicate")
            x = x.reshape(b, c, t, *x.shape[-2:])
        return x

    def to_frames(self, video: torch.Tensor) -> np.ndarray:
        """(1, 3, t, H', W') in [-1, 1] -> (t, H, W, 3) uint8, padding cropped."""
        video = video[0, :, :, : self.height, : self.width].float().clamp(-1, 1)
        return ((video + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).cpu().numpy()

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def validate(self) -> None:
        """Sizes read from a file: positive frame sizes, non-negative padding (ValueError naming the field). The
        token tensor's shape must then match them (`TokenFile.check_against`), so no header can make decoding
        allocate more than the latents in the file describe."""
        for key, minimum in (("source_height", 1), ("source_width", 1), ("height", 1), ("width", 1)):
            parse_count(getattr(self, key), f"geometry.{key}", minimum)
        for key in ("pad_bottom", "pad_right"):
            parse_count(getattr(self, key), f"geometry.{key}", 0)


def _batched(frames: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


@dataclass(frozen=True)
class Source:
    """A video file read as it plays, at its own rate or resampled by timestamps to `fps` (vidtok.data.video.FrameGrid):
    pictures at their timestamps, a gap holding the previous one. `num_frames` comes from the packets' timestamps
    before the first frame is decoded (causal encoding needs it for its front padding), never from the container's
    frame count, and `frames()` yields exactly that many."""

    path: str
    fps: Fraction
    num_frames: int
    height: int
    width: int
    resampled: bool
    grid: FrameGrid = field(repr=False, compare=False)

    @classmethod
    def open(cls, path: str, fps: float | None, allow_partial: bool) -> Source:
        if fps is not None and fps <= 0:
            raise ValueError(f"--fps must be positive, got {fps}")
        # With allow_partial a damaged file's frames end where decoding stops: frame_grid finds that in a first,
        # quiet decode pass, so the count is still known before the first chunk.
        grid = frame_grid(path, fps, allow_partial=allow_partial)
        return cls(path, grid.fps, grid.num_frames, grid.height, grid.width, not grid.native, grid)

    def frames(self, allow_partial: bool) -> Iterator[np.ndarray]:
        return self.grid.frames(allow_partial=allow_partial)


def resolve_dtype(requested: str, device: str) -> tuple[str, str]:
    """The precision a run on `device` uses (fp32 | bf16 | fp16) and a phrase saying why. `auto` takes bf16 where
    the device does bf16 arithmetic natively (a CPU with AVX512-BF16 or AMX, a CUDA card with bf16), fp32 elsewhere.
    bf16 asked for on a CPU without it still runs, emulated: bf16 numerics at fp32 speed (vidtok/model/kernels.py)."""
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"--dtype must be auto, fp32, bf16 or fp16, got {requested!r}")
    kind = torch.device(device).type
    native = torch.cuda.is_bf16_supported() if kind == "cuda" else kind == "cpu" and has_native(torch.bfloat16)
    where = f"this {'GPU' if kind == 'cuda' else 'CPU'}"
    if requested == "auto":
        return (
            ("bf16", f"bf16 (auto: {where} has native bf16)")
            if native
            else ("fp32", f"fp32 (auto: {where} has no native bf16)")
        )
    if requested == "bf16" and not native:
        return "bf16", f"bf16 emulated ({where} has no native bf16: bf16 numerics at fp32 speed)"
    return requested, f"{requested}" + (" (native)" if requested == "bf16" else "")


def _autocast(device: torch.device, dtype: str):
    dtype, _ = resolve_dtype(dtype, str(device))
    if dtype == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[dtype])


@dataclass(frozen=True)
class RunOptions:
    chunk_frames: int = 16
    tile: TileSpec | None = None
    device: str = "auto"
    dtype: str = "fp32"  # fp32 | bf16 | fp16 (autocast) | auto (resolve_dtype)
    allow_partial: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in ("fp32", "bf16", "fp16", "auto"):
            raise ValueError(f"--dtype must be auto, fp32, bf16 or fp16, got {self.dtype!r}")


# ================================================================================================= token files


@dataclass
class TokenFile:
    """The content of a token file."""

    tensor: torch.Tensor  # indices (1, t, h, w) int32 or latents (1, z, t, h, w) float32
    kind: str  # "indices" | "latents"
    model: ModelRef
    model_config: dict
    source: str
    fps: Fraction
    num_frames: int
    geometry: Geometry
    clip_frames: int  # frames per chunk at encode time: the independent clip length of non-causal models

    def save(self, path: str | os.PathLike) -> Path:
        target = Path(path)
        tensor = self.tensor.contiguous().cpu()
        metadata = {
            "format": TOKEN_FORMAT,
            "format_version": TOKEN_FORMAT_VERSION,
            "kind": self.kind,
            "model": json.dumps(self.model.__dict__),
            "model_config": json.dumps(self.model_config, sort_keys=True),
            "source": self.source,
            "fps": f"{self.fps.numerator}/{self.fps.denominator}",
            "num_frames": str(self.num_frames),
            "geometry": json.dumps(self.geometry.as_dict()),
            "clip_frames": str(self.clip_frames),
        }
        metadata["content_sha256"] = token_content_sha256(metadata, tensor.numpy())
        with atomic_path(target) as tmp:
            save_safetensors({self.kind: tensor}, tmp, metadata=metadata)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenFile:
        name = str(path)
        meta, array = read_token_file(path)
        try:
            token = cls(
                tensor=torch.from_numpy(array),
                kind=meta["kind"],
                model=ModelRef(**json.loads(meta["model"])),
                model_config=json.loads(meta["model_config"]),
                source=meta.get("source", ""),
                fps=parse_fraction(meta["fps"], "fps"),
                num_frames=parse_count(meta["num_frames"], "num_frames"),
                geometry=Geometry(**json.loads(meta["geometry"])),
                clip_frames=parse_count(meta["clip_frames"], "clip_frames"),
            )
            token.geometry.validate()
        except KeyError as err:
            raise TokenFileError(f"{name}: bad metadata (missing field {err})") from None
        except (ValueError, TypeError) as err:
            raise TokenFileError(f"{name}: bad metadata ({err})") from None
        return token

    def check_against(self, model: VidTok, name: str) -> None:
        """Shape and range checks: the tensor must be what this model makes for the recorded clip."""
        if model.config.to_dict() != self.model_config:
            raise TokenFileError(f"{name}: made by another model ({self.model.describe()}); decode it with that one")
        g = self.geometry
        factor, frames_per_latent = model.config.spatial_factor, model.config.temporal_factor
        if g.pad_bottom >= factor or g.pad_right >= factor:
            raise TokenFileError(
                f"{name}: geometry pads {g.pad_bottom}x{g.pad_right} px, more than the spatial factor {factor} needs"
            )
        if not model.config.causal and self.clip_frames % frames_per_latent:
            raise TokenFileError(
                f"{name}: clip_frames {self.clip_frames} is not a multiple of the temporal factor {frames_per_latent}"
            )
        c, t, h, w = model.config.latent_shape(self.num_frames, g.height + g.pad_bottom, g.width + g.pad_right)
        if not model.config.causal:  # independent clips, the last one padded to the clip length
            clips = -(-self.num_frames // self.clip_frames)
            t = clips * self.clip_frames // model.config.temporal_factor
        expected = (1, t, h, w) if self.kind == "indices" else (1, c, t, h, w)
        if tuple(self.tensor.shape) != expected:
            raise TokenFileError(
                f"{name}: {self.kind} shape {tuple(self.tensor.shape)} does not match {expected} "
                f"for {self.num_frames} frames of {g.height}x{g.width}"
            )
        if self.kind == "indices":
            size = model.config.num_codes or 0
            low, high = int(self.tensor.min()), int(self.tensor.max())
            if low < 0 or high >= size:
                raise TokenFileError(f"{name}: token ids span [{low}, {high}], outside the codebook [0, {size})")


# ================================================================================================= file operations


@dataclass
class EncodeResult:
    tokens: TokenFile
    path: Path


def _encode_chunks(
    model: VidTok,
    source: Source,
    geometry: Geometry,
    options: RunOptions,
    device: torch.device,
    on_frames: Callable[[np.ndarray], None] | None = None,
) -> Iterator:
    """Stream the source through the encoder: yields latent chunks (vidtok.model.vidtok.Encoded)."""

    def model_chunks() -> Iterator[torch.Tensor]:
        for frames in _batched(source.frames(options.allow_partial), options.chunk_frames):
            if on_frames is not None:
                on_frames(frames)
            yield geometry.to_model(frames, device)

    # Non-causal models run on independent clips of chunk_frames frames.
    return iter_encode(
        model, model_chunks(), source.num_frames, chunk_frames=options.chunk_frames, tile=options.tile, name=source.path
    )


def encode_file(
    input_path: str,
    output_path: str | os.PathLike,
    *,
    weights: ModelRef = ModelRef(),
    fps: float | None = None,
    resolution: str | int | None = None,
    options: RunOptions = RunOptions(),
    progress: Callable[[int], None] | None = None,
) -> EncodeResult:
    """Encode a video file into a token file (indices for discrete models, latents otherwise) with the weights
    `weights` names (a checkpoint folder, or a preset with random weights: `load_model`)."""
    device = torch.device(resolve_device(options.device))
    model, ref = load_model(weights.preset, weights.checkpoint)
    model = model.to(device).eval()
    source = Source.open(input_path, fps, options.allow_partial)
    geometry = Geometry.plan((source.height, source.width), model.config.spatial_factor, resolution)
    parts = []
    with torch.no_grad(), _autocast(device, options.dtype):
        for chunk in _encode_chunks(model, source, geometry, options, device):
            parts.append(chunk.indices.int() if chunk.indices is not None else chunk.latents.float())
            if progress:
                progress(chunk.num_frames)
    discrete = parts[0].dtype == torch.int32
    tensor = torch.cat(parts, dim=1 if discrete else 2).cpu()
    tokens = TokenFile(
        tensor,
        "indices" if discrete else "latents",
        ref,
        model.config.to_dict(),
        input_path,
        source.fps,
        source.num_frames,
        geometry,
        options.chunk_frames,
    )
    return EncodeResult(tokens, tokens.save(output_path))


def _model_for_tokens(tokens: TokenFile, name: str, preset: str | None, checkpoint: str | None) -> VidTok:
    if checkpoint is None and preset is None:
        checkpoint, preset = tokens.model.checkpoint, tokens.model.preset
    model, ref = load_model(None if checkpoint else preset, checkpoint)
    if tokens.model.weights_sha256 and ref.weights_sha256 and tokens.model.weights_sha256 != ref.weights_sha256:
        raise TokenFileError(
            f"{name}: made with weights {tokens.model.weights_sha256[:12]}, "
            f"not {ref.weights_sha256[:12]} ({ref.describe()})"
        )
    tokens.check_against(model, name)
    return model


def _latent_chunks(
    tokens: TokenFile, model: VidTok, chunk_latents: int, device: torch.device
) -> Iterator[torch.Tensor]:
    t_axis = 1 if tokens.kind == "indices" else 2
    for part in tokens.tensor.split(chunk_latents, dim=t_axis):
        part = part.to(device)
        yield model.indices_to_latents(part.long()) if tokens.kind == "indices" else part


def decode_file(
    tokens_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    weights: ModelRef = ModelRef(),
    options: RunOptions = RunOptions(),
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Decode a token file into an H.264 mp4 at the recorded frame rate and size, with the weights `weights` names
    (default: the ones the token file records)."""
    name = str(tokens_path)
    tokens = TokenFile.load(tokens_path)
    device = torch.device(resolve_device(options.device))
    model = _model_for_tokens(tokens, name, weights.preset, weights.checkpoint).to(device).eval()
    g = tokens.geometry
    # Non-causal latents must be cut at the clip boundaries used when encoding.
    frames_per_chunk = options.chunk_frames if model.config.causal else tokens.clip_frames
    chunk_latents = max(1, frames_per_chunk // model.config.temporal_factor)
    with (
        torch.no_grad(),
        _autocast(device, options.dtype),
        VideoWriter(output_path, tokens.fps, g.width, g.height) as w,
    ):
        stream = _latent_chunks(tokens, model, chunk_latents, device)
        for video in iter_decode(model, stream, tokens.num_frames, chunk_latents=chunk_latents, tile=options.tile):
            frames = g.to_frames(video)
            w.write(frames)
            if progress:
                progress(len(frames))
    return Path(output_path)


@dataclass
class ReconstructResult:
    path: Path
    num_frames: int
    psnr: float  # mean of per-frame PSNR on [0, 1] (VidTok protocol)
    ssim: float  # mean of per-frame SSIM, Gaussian 11x11, sigma 1.5
    per_frame_psnr: list[float]


def reconstruct_file(
    input_path: str,
    output_path: str | os.PathLike,
    *,
    weights: ModelRef = ModelRef(),
    fps: float | None = None,
    resolution: str | int | None = None,
    side_by_side: bool = False,
    options: RunOptions = RunOptions(),
    progress: Callable[[int], None] | None = None,
) -> ReconstructResult:
    """Encode and decode a video in one stream with the weights `weights` names; write the reconstruction (or
    original | reconstruction) and score it.

    PSNR and SSIM compare the reconstruction with the frames the model was given (after resampling and resizing).
    """

    device = torch.device(resolve_device(options.device))
    model, _ = load_model(weights.preset, weights.checkpoint)
    model = model.to(device).eval()
    source = Source.open(input_path, fps, options.allow_partial)
    g = Geometry.plan((source.height, source.width), model.config.spatial_factor, resolution)
    originals: deque[np.ndarray] = deque()  # model-resolution originals waiting for their reconstruction

    def keep(frames: np.ndarray) -> None:
        originals.extend(g.to_frames(g.to_model(frames, torch.device("cpu"))))

    per_frame_psnr: list[float] = []
    ssim_sum = 0.0
    width = g.width * (2 if side_by_side else 1)
    chunk_latents = max(1, options.chunk_frames // model.config.temporal_factor)
    with torch.no_grad(), _autocast(device, options.dtype), VideoWriter(output_path, source.fps, width, g.height) as w:
        encoded = (c.latents for c in _encode_chunks(model, source, g, options, device, on_frames=keep))
        for video in iter_decode(model, encoded, source.num_frames, chunk_latents=chunk_latents, tile=options.tile):
            recon = g.to_frames(video)
            ref = np.stack([originals.popleft() for _ in range(len(recon))])
            ref_t = torch.from_numpy(ref).permute(3, 0, 1, 2).float().div(255)
            rec_t = torch.from_numpy(recon).permute(3, 0, 1, 2).float().div(255)
            per_frame_psnr.extend(psnr(ref_t, rec_t).per_frame or ())
            ssim_sum += ssim(ref_t, rec_t).value * len(recon)
            w.write(np.concatenate([ref, recon], axis=2) if side_by_side else recon)
            if progress:
                progress(len(recon))
    n = len(per_frame_psnr)
    return ReconstructResult(Path(output_path), n, float(np.mean(per_frame_psnr)), ssim_sum / n, per_frame_psnr)
