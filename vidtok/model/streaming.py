"""Videos of any length and size: causal chunked streaming, independent clips for non-causal models, spatial tiles.

    vidtok reconstruct bikes.mp4 -o rec.mp4 --preset tiny_kl_causal_444 --chunk-frames 16 --tile 256

Causal models stream: every causal temporal layer carries the unconsumed tail of its input from one chunk to the
next, so peak memory depends on the chunk length, not on the video length, and the latents and frames equal those
of whole-clip inference. What a stream carries is held here, in a `StreamState`: one state object per layer that
looks back in time (`CausalTail`, `UpsampleHold`, `ShortcutHold`), given to the layer's `stream` attribute by
`set_streaming` / `set_stream_state` (None, the default, is whole-clip inference: the layers pad and keep nothing).

Chunking of a T-frame causal clip at factor f: the p = (-T) mod f padding copies of frame 0 plus the first f - p
frames form latent 0; then chunks of `chunk_frames` (a multiple of f). Decoding feeds latents in chunks; the linear
temporal upsampling (v1.1) needs one latent of look-ahead, whose frames the upsampling layers' states hold back until
the next chunk or the end of the stream. Large chunks run the decoder's up levels on pieces of a few frames
(`PIECE_ELEMENTS`).

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
from dataclasses import dataclass, field

import torch
from torch import nn

from vidtok.model.trivial import TrivialShortcut
from vidtok.model.vidtok import CausalTime, Decoder, Encoded, TemporalUpsample, VidTok

# With tiles, how many frames are buffered and run tile by tile (see TileGrid.run): a longer segment means fewer
# hand-overs of every tile's carried state, a shorter one smaller input/output buffers.
DEFAULT_SEGMENT_FRAMES = 32
# A streamed decode runs an up level on pieces of frames when its largest activation would exceed this many elements
# (32 Mi fp32 values = 128 MiB); whole-clip calls and training never split.
PIECE_ELEMENTS = 32 * 2**20


# ================================================================================================= stream state


@dataclass
class CausalTail:
    """A causal temporal layer's (vidtok.model.vidtok.CausalTime) carried input: the frames no finished output
    window has consumed yet, y[s * n_out:] of its last input y (None before the first chunk, padded as a clip is)."""

    frames: torch.Tensor | None = None

    def extend(self, layer: CausalTime, x: torch.Tensor) -> torch.Tensor:
        """`x` with its past in front; keeps the new tail."""
        y = layer.pad(x) if self.frames is None else torch.cat([self.frames, x], dim=2)
        self.frames = y[:, :, layer.stride_t * layer.windows(y.shape[2]) :].clone()
        return y


def _segment_frames(layer: TemporalUpsample, seq: torch.Tensor, has_prev: bool, close: bool) -> torch.Tensor:
    """The interpolated frames of a streamed segment. `seq` may start with the previous chunk's last frame
    (has_prev), whose even output was already emitted; without `close` the last frame's odd output is held back
    (it depends on the next chunk's first frame)."""
    m = seq.shape[2]
    return layer.interpolate(seq)[:, :, int(has_prev) : 2 * m - (0 if close else 1)]


@dataclass
class UpsampleHold:
    """A linear temporal upsampling's (vidtok.model.vidtok.TemporalUpsample) stream: the inputs of the first latent
    until all have come (they are interpolated on their own), the last input of the rest, whose odd output waits for
    the next one, and `flush`: whether the current call ends the stream (then nothing is held back)."""

    seen: int = 0  # inputs seen so far
    first: torch.Tensor | None = None  # inputs of the first latent, while not all of them have come
    held: torch.Tensor | None = None  # last input of the rest segment, odd output pending
    flush: bool = True

    def upsample(self, layer: TemporalUpsample, x: torch.Tensor) -> torch.Tensor:
        outs = []
        take = max(0, min(layer.first_frames - self.seen, x.shape[2]))
        self.seen += x.shape[2]
        if take:
            first = x[:, :, :take]
            self.first = first if self.first is None else torch.cat([self.first, first], dim=2)
            if self.first.shape[2] == layer.first_frames or self.flush:
                outs.append(_segment_frames(layer, self.first, False, True))
                self.first = None  # emitted; later inputs never join the first segment (self.seen says so)
        rest = x[:, :, take:]
        if rest.shape[2]:
            has_prev = self.held is not None
            seq = torch.cat([self.held, rest], dim=2) if has_prev else rest
            outs.append(_segment_frames(layer, seq, has_prev, self.flush))
            self.held = None if self.flush else seq[:, :, -1:].clone()
        elif self.flush and self.held is not None:
            outs.append(self.held)
            self.held = None
        return torch.cat(outs, dim=2) if outs else x[:, :, :0].repeat_interleave(2, dim=2)


@dataclass
class ShortcutHold:
    """The trivial shortcut's (vidtok.model.trivial.TrivialShortcut) stream in a causal decoder: the last latent of
    the previous chunk and the upsampled frames the decoder has not emitted yet."""

    previous: torch.Tensor | None = None
    pending: torch.Tensor | None = None

    def upsample(self, shortcut: TrivialShortcut, z: torch.Tensor, frames: int) -> torch.Tensor:
        if z.shape[2]:
            new = shortcut.causal_frames(z, self.previous)
            self.pending = new if self.pending is None else torch.cat([self.pending, new], dim=2)
            self.previous = z[:, :, -1:].clone()
        if self.pending is None or self.pending.shape[2] < frames:
            raise RuntimeError(f"trivial shortcut: the decoder emitted {frames} frames ahead of its latents")
        out, self.pending = self.pending[:, :, :frames], self.pending[:, :, frames:]
        return out


STATEFUL = (CausalTime, TemporalUpsample, TrivialShortcut)  # the layers with a `stream` attribute


def _fresh(layer: nn.Module) -> CausalTail | UpsampleHold | ShortcutHold:
    if isinstance(layer, TemporalUpsample):
        return UpsampleHold()
    if isinstance(layer, TrivialShortcut):
        return ShortcutHold()
    return CausalTail()


@dataclass
class StreamState:
    """What one stream carries through a module: the state of each of its stateful layers, by layer name."""

    layers: dict[str, CausalTail | UpsampleHold | ShortcutHold] = field(default_factory=dict)

    @classmethod
    def fresh(cls, module: nn.Module) -> StreamState:
        """The state of a stream that has not started."""
        return cls({name: _fresh(m) for name, m in module.named_modules() if isinstance(m, STATEFUL)})


def set_stream_state(module: nn.Module, state: StreamState | None) -> None:
    """Give every stateful layer of `module` its part of `state`; None: whole-clip inference (no state)."""
    for name, m in module.named_modules():
        if isinstance(m, STATEFUL):
            m.stream = None if state is None else state.layers[name]


def get_stream_state(module: nn.Module) -> StreamState | None:
    """The state `module`'s layers carry (None when it is not streaming)."""
    layers = {name: m.stream for name, m in module.named_modules() if isinstance(m, STATEFUL)}
    return StreamState(layers) if any(s is not None for s in layers.values()) else None


def set_streaming(module: nn.Module, streaming: bool) -> None:
    """Switch every causal temporal layer of `module` to streaming (a fresh state) or whole-clip mode (none)."""
    set_stream_state(module, StreamState.fresh(module) if streaming else None)


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
        self.states: dict[tuple[int, int], StreamState] = {}

    def _out(self, value: int) -> int:
        return round(value * self.scale)

    def run(self, module: torch.nn.Module, parts: list[torch.Tensor], fns: list, last: bool) -> list[torch.Tensor]:
        """Consecutive chunks `parts` of one stream through `fns`, tile by tile, blended per chunk.

        Tile-major order: a tile runs all the parts (its streaming state given to `module` first, when it streams)
        before the next tile starts, so only one tile's activations and carried tails are alive at a time. Unless
        `last`, each tile's state is kept for the next call; those states together hold a full frame's worth of
        causal-conv tails, which is why a clip passed as one segment needs much less memory than the same clip
        chunk by chunk.
        """
        out_overlap = self._out(self.overlap)
        total_h, total_w = self._out(self.height), self._out(self.width)
        streaming = get_stream_state(module) is not None
        accs: list[torch.Tensor | None] = [None] * len(parts)
        dtypes: list[torch.dtype | None] = [None] * len(parts)
        weight_sum = torch.zeros(total_h, total_w, device=parts[0].device)
        for y, x0 in self.tiles:
            state = (self.states.pop((y, x0), None) or StreamState.fresh(module)) if streaming else None
            set_stream_state(module, state)
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
            if streaming and not last:
                self.states[(y, x0)] = state
        if streaming:  # the module no longer references the last tile's tensors
            set_stream_state(module, StreamState.fresh(module))
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
                q = model.regularizer(feature)
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
        q = model.regularizer(features)
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


class _Pieces:
    """A streamed decoder's up levels and output conv (Decoder.up_levels), run on pieces of a few frames where a
    level's largest activation would exceed `PIECE_ELEMENTS` (inference only).

    The layers carry their causal state from call to call, so running the rest of the decoder on a few frames at a
    time gives the same frames as the whole chunk, with the peak memory of the full-resolution levels cut to a
    piece (a 256 px tile of the 4x8x8 models: one 2-frame piece instead of 4 frames at 256 channels). `flush` says
    whether the chunk ends the stream; only a chunk's last piece may flush."""

    def __init__(self, decoder: Decoder, flush: bool):
        self.decoder, self.flush = decoder, flush
        self.holds = [m.stream for m in decoder.modules() if isinstance(m, TemporalUpsample) and m.stream is not None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.decoder.cfg.spatial_factor
        self.out_size = (x.shape[3] * scale, x.shape[4] * scale)
        return self._levels(x, 0, self.flush, in_piece=False)

    def _levels(self, x: torch.Tensor, first: int, flush: bool, in_piece: bool) -> torch.Tensor:
        decoder = self.decoder
        for i in range(first, decoder.num_levels):
            frames = x.shape[2]
            if frames > 1 and not torch.is_grad_enabled():
                piece = max(1, PIECE_ELEMENTS // decoder.level_peak_per_frame(i, x))
                if piece < frames:
                    pieces = x.split(piece, dim=2)
                    last = len(pieces) - 1
                    return torch.cat([self._levels(p, i, flush and j == last, True) for j, p in enumerate(pieces)], 2)
            for hold in self.holds:
                hold.flush = flush
            x = decoder.up_level(i, x)
            if x.shape[2] == 0:  # a temporal upsample held every frame back
                if in_piece:  # they wait for the next piece (first-latent frames)
                    return x.new_zeros(x.shape[0], 3, 0, *self.out_size)
                raise ValueError("streaming decode got no frame at a temporal upsample; start with latent 0")
        return decoder.output(x)


def _decode_local(decoder: Decoder, x: torch.Tensor, flush: bool) -> torch.Tensor:
    """Decoder.forward_local for a streaming decoder: the up levels in pieces, frames held back unless `flush`."""
    return decoder.forward_local(x, up_levels=_Pieces(decoder, flush))


def _decode_tiled(
    model: VidTok, grid: TileGrid, chunks: list[torch.Tensor], flush: list[bool], last: bool
) -> list[torch.Tensor]:
    """The decoder's mid block (whole-frame attention) on each latent chunk, then its up levels on tiles."""
    decoder = model.decoder
    mid = [decoder.forward_global(z) for z in chunks]  # in stream order: it carries causal state
    fns = [functools.partial(_decode_local, decoder, flush=f) for f in flush]
    return grid.run(decoder.local_modules(), mid, fns, last)


def _checked_latents(model: VidTok, stream, num_frames: int) -> Iterator[torch.Tensor]:
    total = model.config.latent_frames(num_frames)
    seen = 0
    for z in stream:
        model.check_latents(z)
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
                outputs = [_decode_local(model.decoder, model.decoder.forward_global(segment[0]), flush[0])]
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
        model.check_latents(z)
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
