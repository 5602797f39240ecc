"""Videos of any length and size: causal chunked streaming, independent clips for non-causal models, spatial tiles.

    vidtok reconstruct bikes.mp4 -o rec.mp4 --preset tiny_kl_causal_444 --chunk-frames 16 --tile 256

Causal models stream: every causal temporal layer carries the unconsumed tail of its input from one chunk to the
next (`vidtok.model.vidtok.set_streaming`), so peak memory depends on the chunk length, not on the video length, and the
latents and frames equal those of whole-clip inference. Chunking of a T-frame causal clip at factor f: the
p = (-T) mod f padding copies of frame 0 plus the first f - p frames form latent 0; then chunks of `chunk_frames`
(a multiple of f). Decoding feeds latents in chunks; the linear temporal upsampling (v1.1) needs one latent of
look-ahead, which the decoder holds back internally until the next chunk or the end of the stream.

Non-causal models see independent clips of `clip_frames` (a multiple of f); the last clip is padded by repeating
its last frame and the padding is trimmed after decoding.

Spatial tiling splits frames into overlapping tiles (sizes in pixels, multiples of the spatial factor). Only the
convolutional levels run on tiles; the mid block, whose attention spans the whole frame, runs on the blended
frame at the latent resolution (encoder: before quantization, so discrete codes stay valid; decoder: before the
up levels), so tiling changes nothing but the convolutions' view near tile borders. Tile outputs are blended
with linear ramps across the middle half of each overlap. Every tile keeps its own streaming state, so tiling and
temporal chunking combine; up to `segment_frames` frames run tile by tile, so a short clip keeps only one tile's
activations and causal tails alive (between segments all tiles' tails are held: a full frame's worth).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from vidtok.model.vidtok import Encoded, VidTok, get_stream_state, set_stream_state, set_streaming

# With tiles, how many frames are buffered and run tile by tile (see TileGrid.run): a longer segment means fewer
# hand-overs of every tile's carried state, a shorter one smaller input/output buffers.
DEFAULT_SEGMENT_FRAMES = 32


@functools.cache
def _glibc_malloc_trim():
    """glibc's malloc_trim, or None on other C libraries (musl, macOS, Windows)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the operating system (glibc only; elsewhere a no-op).

    Chunk after chunk, activations of varying sizes leave glibc's heap fragmented: freed blocks below the mmap
    threshold stay mapped, so resident memory creeps up over a long stream (measured: 17 -> 1,025 frames grew the
    peak by up to 1.3x with nothing alive). Trimming after every chunk keeps it flat at a cost lost in the noise
    (a heap walk, far cheaper than the convolutions of one chunk)."""
    trim = _glibc_malloc_trim()
    if trim is not None:
        trim(0)


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
    """1D blend weight of a tile at `start`: rises across the overlap with the previous tile, falls across the next.

    The outer quarter of a shared edge gets weight 0: those pixels were computed next to the tile's zero padding
    instead of the neighbour's content, and a linear ramp over the whole overlap still lets that error through (a
    visible seam). The middle half of the overlap cross-fades; the weights of two neighbours sum to one.
    """
    w = torch.ones(size)
    overlap = min(overlap, size)
    if overlap == 0:
        return w
    dead = overlap // 4
    fade = overlap - 2 * dead
    ramp = torch.ones(overlap)
    ramp[:dead] = 0.0
    ramp[dead : dead + fade] = (torch.arange(fade, dtype=torch.float32) + 0.5) / fade
    if start > 0:
        w[:overlap] = ramp
    if start + size < total:
        w[-overlap:] = torch.minimum(w[-overlap:], ramp.flip(0))
    return w


class TileGrid:
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

    def run(self, module: torch.nn.Module, parts: list[torch.Tensor], fns: list, last: bool) -> list[torch.Tensor]:
        """Consecutive chunks `parts` of one stream through `fns`, tile by tile, blended per chunk.

        Tile-major order: a tile runs all the parts (its streaming state restored first) before the next tile
        starts, so only one tile's activations and carried tails are alive at a time. Unless `last`, each tile's
        state is kept for the next call; those states together hold a full frame's worth of causal-conv tails,
        which is why a clip passed as one segment needs much less memory than the same clip chunk by chunk.
        """
        out_overlap = self._out(self.overlap)
        total_h, total_w = self._out(self.height), self._out(self.width)
        if self._fresh is None:
            self._fresh = get_stream_state(module)
        accs: list[torch.Tensor | None] = [None] * len(parts)
        dtypes: list[torch.dtype | None] = [None] * len(parts)
        weight_sum = torch.zeros(total_h, total_w, device=parts[0].device)
        for y, x0 in self.tiles:
            set_stream_state(module, self.states.pop((y, x0), self._fresh))
            oy, ox = self._out(y), self._out(x0)
            oh, ow = self._out(self.size_h), self._out(self.size_w)
            w = _ramp(oy, oh, out_overlap, total_h)[:, None] * _ramp(ox, ow, out_overlap, total_w)[None, :]
            w = w.to(parts[0].device)
            weight_sum[oy : oy + oh, ox : ox + ow] += w
            for i, (part, fn) in enumerate(zip(parts, fns, strict=True)):
                out = fn(part[..., y : y + self.size_h, x0 : x0 + self.size_w])
                if accs[i] is None:
                    accs[i] = out.new_zeros((*out.shape[:3], total_h, total_w), dtype=torch.float32)
                    dtypes[i] = out.dtype
                accs[i][..., oy : oy + oh, ox : ox + ow] += out.float() * w
            if not last:
                self.states[(y, x0)] = get_stream_state(module)
        set_stream_state(module, self._fresh)  # the module no longer references the last tile's tensors
        return [(acc / weight_sum).to(dtype) for acc, dtype in zip(accs, dtypes, strict=True)]


def _segments(chunks: Iterable[torch.Tensor], max_frames: int) -> Iterator[tuple[list[torch.Tensor], bool]]:
    """Group consecutive chunks into lists of at most `max_frames` frames (at least one chunk each); flag the last."""
    segment: list[torch.Tensor] = []
    frames = 0
    for chunk in chunks:
        if segment and frames + chunk.shape[2] > max_frames:
            yield segment, False
            segment, frames = [], 0
        segment.append(chunk)
        frames += chunk.shape[2]
    if segment:
        yield segment, True


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
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
    name: str = "the stream",
) -> Iterator[Encoded]:
    """Encode a stream of frame chunks (B, 3, t, H, W) in [-1, 1] totalling `num_frames`; yields latent chunks.

    Causal: chunk outputs concatenated along time equal `model.encode(whole clip)`. Non-causal: one Encoded per
    clip of `chunk_frames` frames (the last one padded by repeating its final frame). With tiles, up to
    `segment_frames` frames are buffered and run tile by tile (see `TileGrid.run`). A stream that holds more or
    fewer frames than `num_frames` is a ValueError that starts with `name` (the file the frames come from).
    """
    tf = model.config.temporal_factor
    if chunk_frames <= 0 or chunk_frames % tf:
        raise ValueError(f"chunk_frames={chunk_frames} must be a positive multiple of the temporal factor {tf}")
    if num_frames < 1:
        raise ValueError("num_frames must be >= 1")
    if model.config.causal:
        yield from _iter_encode_causal(model, frames, num_frames, chunk_frames, tile, segment_frames, name)
    else:
        yield from _iter_encode_clips(model, frames, num_frames, chunk_frames, tile, name)


def _encode_tiled(model: VidTok, grid: TileGrid, chunks: list[torch.Tensor], last: bool) -> list[torch.Tensor]:
    """The encoder's convolutional levels on tiles, then its mid block (whole-frame attention) on the blend.

    Only the mid block is global: running it on tiles would give each tile its own attention context and offset
    every tile's latents by a different amount (measured: a per-tile plateau of error, not a seam).
    """
    encoder = model.encoder
    local = grid.run(encoder.local_modules(), chunks, [encoder.forward_local] * len(chunks), last)
    return [encoder.forward_global(features) for features in local]  # in stream order: it carries causal state


def _causal_input_chunks(
    model: VidTok, frames, num_frames: int, chunk_frames: int, name: str
) -> Iterator[tuple[torch.Tensor, int]]:
    """The causal encoder's chunks (front padding on the first) with the number of real frames in each; checked."""
    pad = model.front_padding(num_frames)
    first = model.config.temporal_factor - pad
    seen = 0
    for index, chunk in enumerate(_rechunk(frames, _causal_chunk_sizes(first, chunk_frames))):
        if index == 0:
            model.check_video(chunk)
            chunk = torch.cat([chunk[:, :, :1].expand(-1, -1, pad, -1, -1), chunk], dim=2)
        real = chunk.shape[2] - (pad if index == 0 else 0)
        seen += real
        if seen > num_frames:
            raise ValueError(f"{name} has more frames than num_frames={num_frames}")
        if chunk.shape[2] % model.config.temporal_factor:
            raise ValueError(f"{name} ended after {seen} frames, expected num_frames={num_frames}")
        yield chunk, real
    if seen != num_frames:
        raise ValueError(f"{name} ended after {seen} frames, expected num_frames={num_frames}")


def _iter_encode_causal(model, frames, num_frames, chunk_frames, tile, segment_frames, name) -> Iterator[Encoded]:
    chunks = _causal_input_chunks(model, frames, num_frames, chunk_frames, name)
    first = next(chunks)
    grid = None
    if _check_tiling(model, tile, *first[0].shape[-2:]):
        grid = TileGrid(*first[0].shape[-2:], tile.size, tile.overlap, 1 / model.config.spatial_factor)
    reals: list[int] = []

    def tensors() -> Iterator[torch.Tensor]:  # the chunks, remembering each one's count of real frames
        for chunk, real in itertools.chain([first], chunks):
            reals.append(real)
            yield chunk

    set_streaming(model.encoder, True)
    try:
        for segment, last in _segments(tensors(), segment_frames if grid else 0):
            if grid is None:
                features = [model.encoder(segment[0])]
            else:
                features = _encode_tiled(model, grid, segment, last)
            for feature in features:
                q = model.regularization(feature)
                yield Encoded(
                    latents=q.latents, num_frames=reals.pop(0), indices=q.indices, mean=q.mean, logvar=q.logvar
                )
            features = feature = q = segment = None  # nothing of this segment stays alive while the heap is trimmed
            release_freed_memory()
    finally:
        set_streaming(model.encoder, False)


def _iter_encode_clips(model, frames, num_frames, clip_frames, tile, name) -> Iterator[Encoded]:
    seen = 0
    for clip in _rechunk(frames, iter(lambda: clip_frames, None)):
        seen += clip.shape[2]
        real = clip.shape[2]
        if real < clip_frames:  # the last clip: repeat its final frame up to the clip length
            clip = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, clip_frames - real, -1, -1)], dim=2)
        model.check_video(clip)
        if _check_tiling(model, tile, *clip.shape[-2:]):
            grid = TileGrid(*clip.shape[-2:], tile.size, tile.overlap, 1 / model.config.spatial_factor)
            features = _encode_tiled(model, grid, [clip], last=True)[0]
        else:
            features = model.encoder(clip)
        q = model.regularization(features)
        yield Encoded(latents=q.latents, num_frames=real, indices=q.indices, mean=q.mean, logvar=q.logvar)
    if seen != num_frames:
        raise ValueError(f"{name} ended after {seen} frames, expected num_frames={num_frames}")


def encode_video(
    model: VidTok,
    video: torch.Tensor,
    *,
    chunk_frames: int = 16,
    tile: TileSpec | None = None,
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
) -> Encoded:
    """Chunked/tiled encode of a whole (B, 3, T, H, W) tensor; latents and indices concatenated along time."""
    stream = video.split(chunk_frames, dim=2)
    chunks = list(
        iter_encode(model, stream, video.shape[2], chunk_frames=chunk_frames, tile=tile, segment_frames=segment_frames)
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
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
) -> Iterator[torch.Tensor]:
    """Decode latents (a tensor, or a stream of latent chunks) into frame chunks totalling `num_frames`.

    Causal: frames equal `model.decode(all latents, num_frames)`. Non-causal: latents are consumed per clip
    (clip_frames / t_factor latents each, the clip length used at encode time = chunk_latents * t_factor).
    With tiles, latent chunks covering up to `segment_frames` frames are buffered and run tile by tile.
    """
    if chunk_latents < 1:
        raise ValueError("chunk_latents must be >= 1")
    stream = latents.split(chunk_latents, dim=2) if torch.is_tensor(latents) else latents
    if model.config.causal:
        yield from _iter_decode_causal(model, stream, num_frames, tile, segment_frames)
    else:
        yield from _iter_decode_clips(model, stream, num_frames, chunk_latents, tile)


def _decode_tiled(
    model: VidTok, grid: TileGrid, chunks: list[torch.Tensor], flush: list[bool], last: bool
) -> list[torch.Tensor]:
    """The decoder's mid block (whole-frame attention) on each latent chunk, then its up levels on tiles."""
    decoder = model.decoder
    mid = [decoder.forward_global(z) for z in chunks]  # in stream order: it carries causal state
    fns = [functools.partial(decoder.forward_local, flush=f) for f in flush]
    return grid.run(decoder.local_modules(), mid, fns, last)


def _checked_latents(model: VidTok, stream, num_frames: int) -> Iterator[torch.Tensor]:
    total = model.config.latent_frames(num_frames)
    seen = 0
    for z in stream:
        model._check_latents(z)
        seen += z.shape[2]
        if seen > total:
            raise ValueError(f"more latent frames than num_frames={num_frames} needs ({total})")
        yield z
    if seen == 0:
        raise ValueError("no latents to decode")
    if seen != total:
        raise ValueError(f"got {seen} latent frames, num_frames={num_frames} needs {total}")


def _last_latent_apart(stream: Iterable[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The stream, with the final latent frame as a chunk of its own when the decoder holds frames back by then.

    Streaming, the decoder holds back the frames that need the next latent for their linear temporal
    interpolation (one per upsampling level, doubled by the levels above: 3 frames at factor 4) and releases them
    at the end of the stream, so a last chunk of k latents would produce t_factor * k + 3 frames, more than any
    regular chunk, and set the peak memory of the whole stream. Giving the release a single latent keeps the last
    call smaller than a regular one. Nothing is held back while only latent 0 (decoded on its own) came before."""
    previous = None
    seen = 0
    for z in stream:
        if previous is not None:
            seen += previous.shape[2]
            yield previous
        previous = z
    if previous is None:
        return
    if seen > 1 and previous.shape[2] > 1:
        yield previous[:, :, :-1]
        previous = previous[:, :, -1:]
    yield previous


def _iter_decode_causal(model, stream, num_frames, tile, segment_frames) -> Iterator[torch.Tensor]:
    tf, s = model.config.temporal_factor, model.config.spatial_factor
    to_skip = tf * model.config.latent_frames(num_frames) - num_frames  # reconstructions of the front padding
    latents = _last_latent_apart(_checked_latents(model, stream, num_frames))
    first = next(latents)
    grid = None
    if _check_tiling(model, tile, *(d * s for d in first.shape[-2:])):
        grid = TileGrid(*first.shape[-2:], tile.size // s, tile.overlap // s, s)
    set_streaming(model.decoder, True)
    try:
        segments = _segments(itertools.chain([first], latents), segment_frames // tf if grid else 0)
        for segment, last in segments:
            flush = [False] * len(segment)
            flush[-1] = last  # frames that need a later latent wait for it, until the end of the stream
            if grid is None:
                outputs = [model.decoder(segment[0], flush=flush[0])]
            else:
                outputs = _decode_tiled(model, grid, segment, flush, last)
            for frames in outputs:
                if to_skip:
                    dropped = min(to_skip, frames.shape[2])
                    frames, to_skip = frames[:, :, dropped:], to_skip - dropped
                if frames.shape[2]:
                    yield frames.contiguous()
            outputs = frames = segment = None  # nothing of this segment stays alive while the heap is trimmed
            release_freed_memory()
    finally:
        set_streaming(model.decoder, False)


def _iter_decode_clips(model, stream, num_frames, chunk_latents, tile) -> Iterator[torch.Tensor]:
    tf, s = model.config.temporal_factor, model.config.spatial_factor
    remaining = num_frames
    for z in stream:
        model._check_latents(z)
        if _check_tiling(model, tile, *(d * s for d in z.shape[-2:])):
            grid = TileGrid(*z.shape[-2:], tile.size // s, tile.overlap // s, s)
            frames = _decode_tiled(model, grid, [z], [True], last=True)[0]
        else:
            frames = model.decoder(z)
        frames = frames[:, :, : min(remaining, tf * z.shape[2])]
        remaining -= frames.shape[2]
        yield frames.contiguous()
    if remaining:
        raise ValueError(f"latents ended {remaining} frames short of num_frames={num_frames}")


def decode_video(
    model: VidTok,
    latents: torch.Tensor,
    num_frames: int,
    *,
    chunk_latents: int = 4,
    tile: TileSpec | None = None,
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
) -> torch.Tensor:
    """Chunked/tiled decode of a latent tensor into a (B, 3, T, H, W) video."""
    frames = iter_decode(
        model, latents, num_frames, chunk_latents=chunk_latents, tile=tile, segment_frames=segment_frames
    )
    return torch.cat(list(frames), dim=2)
