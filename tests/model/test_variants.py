"""The contract every model variant keeps, one test class per variant (after diffusers' ModelTesterMixin).

    pytest tests/model/test_variants.py -q

`VariantContract` holds the tests; each `Test*` class below names a variant: a tiny preset (vidtok/model/config.py)
with the regularizer KL, FSQ, LFQ, VQ or none, causal or not. Each checks, on a clip of a few frames at 32x32: the
save / load round trip, deterministic inference, streaming equal to the whole clip (causal chunks; non-causal
independent clips), tiling (a tile covering the frame is no tiling; tiles of a streamed clip equal tiles of the whole
clip), token ids that decode back (discrete regularizers) or are refused (continuous ones), the parameter counts
`count_parameters` reports, and the error messages for tensors of the wrong shape.
"""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from tests.helpers import tiny
from vidtok import VidTok
from vidtok.model.streaming import TileSpec, decode_video, encode_video
from vidtok.model.vidtok import count_parameters

TOLERANCE = 1e-5  # chunked / tiled against whole-clip arithmetic: the same sums in another order


class VariantContract:
    """The tests; a subclass sets `preset` (a tiny preset) and `changes` (fields derived from it)."""

    preset: ClassVar[str] = "tiny_kl_causal_444"
    changes: ClassVar[dict[str, object]] = {}

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls) -> VidTok:
        torch.manual_seed(0)
        return tiny(cls.preset, **cls.changes)

    @pytest.fixture(scope="class")
    @classmethod
    def video(cls, model: VidTok) -> torch.Tensor:
        frames = 9 if model.config.causal else 8
        return torch.rand(1, 3, frames, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1

    @pytest.fixture(scope="class")
    @classmethod
    def encoded(cls, model: VidTok, video: torch.Tensor):
        with torch.no_grad():
            return model.encode(video)

    def test_save_load_round_trip(self, model: VidTok, video: torch.Tensor, tmp_path) -> None:
        model.save_pretrained(tmp_path / "ckpt")
        loaded = VidTok.from_pretrained(tmp_path / "ckpt").eval()
        assert loaded.config == model.config and loaded.name == model.name
        assert list(loaded.state_dict()) == list(model.state_dict())
        with torch.no_grad():
            assert torch.equal(loaded(video)[0], model(video)[0])

    def test_inference_is_deterministic(self, model: VidTok, video: torch.Tensor, encoded) -> None:
        with torch.no_grad():
            again = model.encode(video)
            assert torch.equal(again.latents, encoded.latents)
            if encoded.indices is not None:
                assert torch.equal(again.indices, encoded.indices)
            frames = video.shape[2]
            assert torch.equal(model.decode(encoded.latents, frames), model.decode(again.latents, frames))

    def test_streaming_equals_the_whole_clip(self, model: VidTok, video: torch.Tensor, encoded) -> None:
        """Causal: chunks of 4 frames / 1 latent give the whole clip's latents and frames. Non-causal: the same
        chunks are independent clips, so they give those of `encode` / `decode` on each clip."""
        frames = video.shape[2]
        with torch.no_grad():
            streamed = encode_video(model, video, chunk_frames=4)
            decoded = decode_video(model, encoded.latents, frames, chunk_latents=1)
            if model.config.causal:
                latents, indices = encoded.latents, encoded.indices
                expected = model.decode(encoded.latents, frames)
            else:
                clips = [model.encode(clip) for clip in video.split(4, dim=2)]
                latents = torch.cat([c.latents for c in clips], dim=2)
                indices = None if encoded.indices is None else torch.cat([c.indices for c in clips], dim=1)
                expected = torch.cat([model.decode(z) for z in encoded.latents.split(1, dim=2)], dim=2)
        assert (streamed.latents - latents).abs().max() <= TOLERANCE
        if indices is not None:
            assert torch.equal(streamed.indices, indices)
        assert decoded.shape == expected.shape == video.shape
        assert (decoded - expected).abs().max() <= TOLERANCE

    def test_tiling(self, model: VidTok, video: torch.Tensor, encoded) -> None:
        """A tile as large as the frame is no tiling; a causal model's tiles each carry their own stream, so tiles of
        a clip in chunks equal the tiles of the whole clip."""
        frames, tile = video.shape[2], TileSpec(size=24, overlap=8)
        with torch.no_grad():
            untiled = encode_video(model, video, chunk_frames=8, tile=TileSpec(size=32, overlap=8))
            assert torch.equal(untiled.latents, encode_video(model, video, chunk_frames=8).latents)
            tiled = encode_video(model, video, chunk_frames=8, tile=tile)
            decoded = decode_video(model, encoded.latents, frames, chunk_latents=2, tile=tile)
            assert decoded.shape == video.shape and torch.isfinite(decoded).all()
            assert tiled.latents.shape == encoded.latents.shape
            if model.config.causal:
                chunks = encode_video(model, video, chunk_frames=4, tile=tile)
                assert (chunks.latents - tiled.latents).abs().max() <= TOLERANCE
                decoded_chunks = decode_video(model, encoded.latents, frames, chunk_latents=1, tile=tile)
                assert (decoded_chunks - decoded).abs().max() <= TOLERANCE

    def test_token_ids(self, model: VidTok, video: torch.Tensor, encoded) -> None:
        """Discrete regularizers: (B, t, h, w) int64 ids that decode back, out-of-range ids refused. Continuous
        ones have no ids."""
        config = model.config
        if config.num_codes is None:
            assert encoded.indices is None
            with pytest.raises(ValueError, match="has no token indices"):
                model.indices_to_latents(torch.zeros(1, 3, 8, 8, dtype=torch.int64))
            return
        assert encoded.indices.dtype == torch.int64
        assert encoded.indices.shape == (1, *config.latent_shape(video.shape[2], 32, 32)[1:])
        with torch.no_grad():
            assert torch.equal(model.indices_to_latents(encoded.indices), encoded.latents)
            decoded = model.decode_indices(encoded.indices, video.shape[2])
            assert torch.equal(decoded, model.decode(encoded.latents, video.shape[2]))
        with pytest.raises(ValueError, match=rf"token indices must lie in \[0, {config.num_codes}\)"):
            model.decode_indices(torch.full_like(encoded.indices, config.num_codes))

    def test_parameter_counts(self, model: VidTok) -> None:
        counts = count_parameters(model.config)
        assert counts == model.num_parameters()
        assert sum(counts.values()) == sum(p.numel() for p in model.parameters())
        assert counts["encoder"] == sum(p.numel() for p in model.encoder.parameters())

    def test_wrong_shapes_are_named(self, model: VidTok) -> None:
        causal, z = model.config.causal, model.config.z_channels
        frames = 9 if causal else 8
        videos = [
            ((1, 1, frames, 16, 16), r"expected a video tensor \(B, 3, T, H, W\)"),
            ((3, frames, 16, 16), r"expected a video tensor"),
            ((1, 3, frames, 18, 16), r"height 18 is not divisible by the spatial factor 4; nearest valid: 16 or 20"),
            ((1, 3, frames, 16, 30), r"width 30 is not divisible by the spatial factor 4; nearest valid: 28 or 32"),
        ]
        if not causal:
            videos.append(((1, 3, 9, 16, 16), r"T divisible by the temporal factor 4, got T=9; nearest valid: 8 or 12"))
        for shape, message in videos:
            with pytest.raises(ValueError, match=message):
                model.encode(torch.zeros(shape))
        with pytest.raises(ValueError, match=rf"expected latents \(B, {z}, t, h, w\)"):
            model.decode(torch.zeros(1, z + 2, 2, 4, 4))
        with pytest.raises(ValueError, match="cannot decode to 30 frames"):
            model.decode(torch.zeros(1, z, 2, 4, 4), num_frames=30)


class TestKLCausal(VariantContract):
    preset = "tiny_kl_causal_444"


class TestKLNonCausal(VariantContract):
    preset = "tiny_kl_noncausal_444"


class TestFSQCausal(VariantContract):
    preset = "tiny_fsq_causal_444"


class TestFSQNonCausal(VariantContract):
    preset, changes = "tiny_fsq_causal_444", {"causal": False}


class TestLFQCausal(VariantContract):
    changes = {"regularizer": "lfq", "z_channels": 6}


class TestLFQNonCausal(VariantContract):
    changes = {"regularizer": "lfq", "z_channels": 6, "causal": False}


class TestVQCausal(VariantContract):
    changes = {"regularizer": "vq", "codebook_size": 64}


class TestVQNonCausal(VariantContract):
    changes = {"regularizer": "vq", "codebook_size": 64, "causal": False}


class TestNoRegularizerCausal(VariantContract):
    preset = "tiny_ae_causal_444"


class TestNoRegularizerNonCausal(VariantContract):
    preset, changes = "tiny_ae_causal_444", {"causal": False}
