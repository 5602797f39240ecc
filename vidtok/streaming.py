"""Videos of any length and size: causal chunked streaming, independent clips for non-causal models, spatial tiles.

    vidtok reconstruct bikes.mp4 -o rec.mp4 --preset tiny_kl_causal_444 --chunk-frames 16 --tile 256

Causal models stream: every causal temporal layer carries the unconsumed tail of its input from one chunk to the
next (`vidtok.model.set_streaming`), so peak memory depends on the chunk length, not on the video length, and the
latents and frames equal those of whole-clip inference. Chunking of a T-frame causal clip at factor f: the
p = (-T) mod f padding copies of frame 0 plus the first f - p frames form latent 0; then chunks of `chunk_frames`
(a multiple of f). Decoding feeds latents in chunks; the linear temporal upsampling (v1.1) needs one latent of
look-ahead, which the decoder holds back internally until the next chunk or the end of the stream.

Non-causal models see independent clips of `clip_frames` (a multiple of f); the last clip is padded by repeating
its last frame and the padding is trimmed after decoding.

Spatial tiling splits frames into overlapping tiles (sizes in pixels, multiples of the spatial factor). Encoder
features (before quantization, so discrete codes stay valid) and decoded pixels are blended with linear ramps
across each overlap. Every tile keeps its own streaming state, so tiling and temporal chunking combine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from vidtok.model import Encoded, VidTok, get_stream_state, set_stream_state, set_streaming


@dataclass(frozen=True)
class TileSpec:
    """Overlapping spatial tiles: `size` x `size` pixels with `overlap` pixels shared by neighbours."""

    size: int = 256
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.size <= 0 or not 0 <= self.overlap < self.size:
            raise ValueError(f"tile size {self.size} and overlap {self.overlap}: need size > overlap >= 0")

    def validate(self, model: VidTok) -> None:
        s = model.config.spatial_factor
        if self.size % s or self.overlap % s:
            raise ValueError(
                f"tile size {self.size} and overlap {self.overlap} must be multiples of the spatial "
                f"factor {s} of {model.name}"
            )


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length): stride size - overlap, the last tile flush with the end."""
    if length <= size:
        return [0]
    stride = size - overlap
    starts = list(range(0, length - size, stride))
    starts.append(length - size)
    return starts


def _ramp(start: int, size: int, overlap: int, total: int) -> torch.Tensor:
    """1D blend weight of a tile at `start`: rises across the overlap with the previous tile, falls across the next."""
    w = torch.ones(size)
    overlap = min(overlap, size)
    if overlap == 0:
        return w
    ramp = (torch.arange(overlap, dtype=torch.float32) + 0.5) / overlap
    if start > 0:
        w[:overlap] = ramp
    if start + size < total:
        w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


class _TileGrid:
    """Overlapping tiles of an (H, W) input, the blend of their outputs, and one streaming state per tile.

    `scale` maps input to output coordinates (1/s for the encoder, s for the decoder); tile sizes and overlaps
    are multiples of the spatial factor, so tiles land on whole output pixels.
    """

    def __init__(self, height: int, width: int, size: int, overlap: int, scale: float):
        self.height, self.width, self.scale = height, width, scale
        self.size_h, self.size_w = min(size, height), min(size, width)
        self.overlap = overlap
        self.tiles = [(y, x) for y in tile_starts(height, size, overlap) for x in tile_starts(width, size, overlap)]
        self.states: dict[tuple[int, int], dict] = {}
        self._fresh: dict | None = None  # the reset streaming state every tile starts from

    def _out(self, value: int) -> int:
        return round(value * self.scale)

    def run(self, module: torch.nn.Module, x: torch.Tensor, fn) -> torch.Tensor:
        """Apply `fn` to every tile of x (restoring that tile's streaming state of `module`) and blend."""
        acc = weight_sum = None
        out_overlap = self._out(self.overlap)
        total_h, total_w = self._out(self.height), self._out(self.width)
        if self._fresh is None:
            self._fresh = get_stream_state(module)
        for y, x0 in self.tiles:
            set_stream_state(module, self.states.get((y, x0), self._fresh))
            out = fn(x[..., y : y + self.size_h, x0 : x0 + self.size_w])
            self.states[(y, x0)] = get_stream_state(module)
            if acc is None:
                acc = out.new_zeros((*out.shape[:3], total_h, total_w), dtype=torch.float32)
                weight_sum = torch.zeros(total_h, total_w, device=out.device)
            oy, ox, oh, ow = self._out(y), self._out(x0), out.shape[-2], out.shape[-1]
            w = (_ramp(oy, oh, out_overlap, total_h)[:, None] * _ramp(ox, ow, out_overlap, total_w)[None, :]).to(
                out.device
            )
            acc[..., oy : oy + oh, ox : ox + ow] += out.float() * w
            weight_sum[oy : oy + oh, ox : ox + ow] += w
        return (acc / weight_sum).to(out.dtype)


def _check_tiling(model: VidTok, tile: TileSpec | None, height: int, width: int) -> bool:
    if tile is None or (height <= tile.size and width <= tile.size):
        return False
    tile.validate(model)
    return True


# ================================================================================================= encode


def _rechunk(chunks: Iterable[torch.Tensor], sizes: Iterator[int]) -> Iterator[torch.Tensor]:
    """Regroup a stream of (B, C, t, H, W) chunks into chunks of the given sizes (the last may be shorter)."""
    buffer: list[torch.Tensor] = []
    have = 0
    want = next(sizes)
    for chunk in chunks:
        buffer.append(chunk)
        have += chunk.shape[2]
        while have >= want:
            joined = torch.cat(buffer, dim=2)
            yield joined[:, :, :want]
            rest = joined[:, :, want:]
            buffer, have = ([rest], rest.shape[2]) if rest.shape[2] else ([], 0)
            want = next(sizes)
    if have:
        yield torch.cat(buffer, dim=2)


def _causal_chunk_sizes(first: int, chunk_frames: int) -> Iterator[int]:
    yield first
    while True:
        yield chunk_frames


def iter_encode(
    model: VidTok,
    frames: Iterable[torch.Tensor],
    num_frames: int,
    *,
    chunk_frames: int = 16,
    tile: TileSpec | None = None,
) -> Iterator[Encoded]:
    """Encode a stream of frame chunks (B, 3, t, H, W) in [-1, 1] totalling `num_frames`; yields latent chunks.

    Causal: chunk outputs concatenated along time equal `model.encode(whole clip)`. Non-causal: one Encoded per
    clip of `chunk_frames` frames (the last one padded by repeating its final frame).
    """
    tf = model.config.temporal_factor
    if chunk_frames <= 0 or chunk_frames % tf:
        raise ValueError(f"chunk_frames={chunk_frames} must be a positive multiple of the temporal factor {tf}")
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if model.config.causal:
        yield from _iter_encode_causal(model, frames, num_frames, chunk_frames, tile)
    else:
        yield from _iter_encode_clips(model, frames, num_frames, chunk_frames, tile)


def _encode_features(model: VidTok, x: torch.Tensor, grid: _TileGrid | None) -> torch.Tensor:
    if grid is None:
        return model.encoder(x)
    return grid.run(model.encoder, x, model.encoder)


def _iter_encode_causal(model, frames, num_frames, chunk_frames, tile) -> Iterator[Encoded]:
    pad = model.front_padding(num_frames)
    first = model.config.temporal_factor - pad
    seen = 0
    grid = None
    set_streaming(model.encoder, True)
    try:
        for index, chunk in enumerate(_rechunk(frames, _causal_chunk_sizes(first, chunk_frames))):
            if index == 0:
                model.check_video(chunk)
                if _check_tiling(model, tile, *chunk.shape[-2:]):
                    grid = _TileGrid(*chunk.shape[-2:], tile.size, tile.overlap, 1 / model.config.spatial_factor)
                chunk = torch.cat([chunk[:, :, :1].expand(-1, -1, pad, -1, -1), chunk], dim=2)
            seen += chunk.shape[2] - (pad if index == 0 else 0)
            if seen > num_frames:
                raise ValueError(f"the stream has more frames than num_frames={num_frames}")
            if chunk.shape[2] % model.config.temporal_factor:
                raise ValueError(f"the stream ended after {seen} frames, expected num_frames={num_frames}")
            q = model.regularization(_encode_features(model, chunk, grid))
            real = chunk.shape[2] - (pad if index == 0 else 0)
            yield Encoded(latents=q.latents, num_frames=real, indices=q.indices, mean=q.mean, logvar=q.logvar)
        if seen != num_frames:
            raise ValueError(f"the stream ended after {seen} frames, expected num_frames={num_frames}")
    finally:
        set_streaming(model.encoder, False)


def _iter_encode_clips(model, frames, num_frames, clip_frames, tile) -> Iterator[Encoded]:
    seen = 0
    for clip in _rechunk(frames, iter(lambda: clip_frames, None)):
        seen += clip.shape[2]
        real = clip.shape[2]
        if real < clip_frames:  # the last clip: repeat its final frame up to the clip length
            clip = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, clip_frames - real, -1, -1)], dim=2)
        model.check_video(clip)
        grid = None
        if _check_tiling(model, tile, *clip.shape[-2:]):
            grid = _TileGrid(*clip.shape[-2:], tile.size, tile.overlap, 1 / model.config.spatial_factor)
        q = model.regularization(_encode_features(model, clip, grid))
        yield Encoded(latents=q.latents, num_frames=real, indices=q.indices, mean=q.mean, logvar=q.logvar)
    if seen != num_frames:
        raise ValueError(f"the stream ended after {seen} frames, expected num_frames={num_frames}")


def encode_video(
    model: VidTok, video: torch.Tensor, *, chunk_frames: int = 16, tile: TileSpec | None = None
) -> Encoded:
    """Chunked/tiled encode of a whole (B, 3, T, H, W) tensor; latents and indices concatenated along time."""
    chunks = list(
        iter_encode(model, video.split(chunk_frames, dim=2), video.shape[2], chunk_frames=chunk_frames, tile=tile)
    )
    indices = [c.indices for c in chunks]
    return Encoded(
        latents=torch.cat([c.latents for c in chunks], dim=2),
        num_frames=video.shape[2],
        indices=torch.cat(indices, dim=1) if indices[0] is not None else None,
    )


# ================================================================================================= decode


def iter_decode(
    model: VidTok,
    latents: torch.Tensor | Iterable[torch.Tensor],
    num_frames: int,
    *,
    chunk_latents: int = 4,
    tile: TileSpec | None = None,
) -> Iterator[torch.Tensor]:
    """Decode latents (a tensor, or a stream of latent chunks) into frame chunks totalling `num_frames`.

    Causal: frames equal `model.decode(all latents, num_frames)`. Non-causal: latents are consumed per clip
    (clip_frames / t_factor latents each, the clip length used at encode time = chunk_latents * t_factor).
    """
    if chunk_latents < 1:
        raise ValueError("chunk_latents must be >= 1")
    stream = latents.split(chunk_latents, dim=2) if torch.is_tensor(latents) else latents
    if model.config.causal:
        yield from _iter_decode_causal(model, stream, num_frames, tile)
    else:
        yield from _iter_decode_clips(model, stream, num_frames, chunk_latents, tile)


def _decode_pixels(model: VidTok, z: torch.Tensor, grid: _TileGrid | None, flush: bool) -> torch.Tensor:
    run = lambda part: model.decoder(part, flush=flush)  # noqa: E731
    if grid is None:
        return run(z)
    return grid.run(model.decoder, z, run)


def _iter_decode_causal(model, stream, num_frames, tile) -> Iterator[torch.Tensor]:
    tf = model.config.temporal_factor
    total_latents = model.config.latent_frames(num_frames)
    to_skip = tf * total_latents - num_frames  # reconstructions of the front padding
    seen_latents = 0
    grid = None
    # Look one chunk ahead so the decoder knows which call is the last (it then flushes held-back frames).
    iterator = iter(stream)
    current = next(iterator, None)
    if current is None:
        raise ValueError("no latents to decode")
    set_streaming(model.decoder, True)
    try:
        while current is not None:
            model._check_latents(current)
            following = next(iterator, None)
            seen_latents += current.shape[2]
            if seen_latents > total_latents:
                raise ValueError(f"more latent frames than num_frames={num_frames} needs ({total_latents})")
            if grid is None and _check_tiling(
                model, tile, *(d * model.config.spatial_factor for d in current.shape[-2:])
            ):
                s = model.config.spatial_factor
                grid = _TileGrid(*current.shape[-2:], tile.size // s, tile.overlap // s, s)
            frames = _decode_pixels(model, current, grid, flush=following is None)
            if to_skip:
                dropped = min(to_skip, frames.shape[2])
                frames, to_skip = frames[:, :, dropped:], to_skip - dropped
            if frames.shape[2]:
                yield frames.contiguous()
            current = following
        if seen_latents != total_latents:
            raise ValueError(f"got {seen_latents} latent frames, num_frames={num_frames} needs {total_latents}")
    finally:
        set_streaming(model.decoder, False)


def _iter_decode_clips(model, stream, num_frames, chunk_latents, tile) -> Iterator[torch.Tensor]:
    tf = model.config.temporal_factor
    remaining = num_frames
    for z in stream:
        model._check_latents(z)
        s = model.config.spatial_factor
        grid = None
        if _check_tiling(model, tile, *(d * s for d in z.shape[-2:])):
            grid = _TileGrid(*z.shape[-2:], tile.size // s, tile.overlap // s, s)
        frames = _decode_pixels(model, z, grid, flush=True)[:, :, : min(remaining, tf * z.shape[2])]
        remaining -= frames.shape[2]
        yield frames.contiguous()
    if remaining:
        raise ValueError(f"latents ended {remaining} frames short of num_frames={num_frames}")


def decode_video(
    model: VidTok, latents: torch.Tensor, num_frames: int, *, chunk_latents: int = 4, tile: TileSpec | None = None
) -> torch.Tensor:
    """Chunked/tiled decode of a latent tensor into a (B, 3, T, H, W) video."""
    return torch.cat(list(iter_decode(model, latents, num_frames, chunk_latents=chunk_latents, tile=tile)), dim=2)
