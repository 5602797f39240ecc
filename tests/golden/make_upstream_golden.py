"""Golden tensors from the upstream microsoft/VidTok code, for tests/model/test_upstream_golden.py.

    git clone https://github.com/microsoft/VidTok /tmp/upstream/VidTok
    git -C /tmp/upstream/VidTok checkout d6ad92d98e8d67617a6ee8fa1ac2111d6bdaa739   # the files' commit
    OMP_NUM_THREADS=1 .venv/bin/python tests/golden/make_upstream_golden.py --upstream /tmp/upstream/VidTok \\
        --layout

Run from the repository root with the project's venv (torch 2.14.1 CPU when these files were made; the upstream code
also needs omegaconf, einops, lightning, beartype, rich, which that venv has). Nothing of the upstream code is copied
here: its package is imported from the folder given by --upstream, and its autoencoder is built from its own
configs/*.yaml with two changes that do not touch the model's arithmetic: the training loss is replaced by
torch.nn.Identity (it would download LPIPS/VGG weights; the forward pass never calls it), and the KL regularizer
is built with sample=False so it returns the posterior mean instead of a random sample.

Weights: tests.helpers.deterministic_weights (numpy PCG64 per key) of the model's own state_dict shapes, the same
function the test uses on the project's model; parameter names are identical on both sides (no mapping). Inputs are
smooth random clips (numpy PCG64, values in (-1, 1)), 32x32 to keep each file under 1 MB. Each file holds:

    input           (1, 3, T, 32, 32) the clip
    encoder_output  the upstream encoder's output before the regularizer (KL: mean and log-variance channels)
    latents         what the decoder reads (KL: the mean; FSQ: the quantized codes)
    recon           upstream's reconstruction (AutoencodingEngine.forward)
    indices         FSQ only: token ids (int64)

plus metadata: upstream commit, config file, preset name, torch and numpy versions, seeds, this command. For FSQ the
input seed is advanced until every bounded value lies at least 1e-3 from a rounding boundary (fsq_margin), so the
token ids cannot flip with the last bits of a different CPU. `--layout` also writes upstream_ckpt_layout.json: the
keys of a Lightning checkpoint that upstream's training would save (state_dict prefixes from the full model with
its loss, built on the meta device; no weights are downloaded or written).

`vidtok` is the name of both packages: the project's tests.helpers (and with it the project's vidtok) is imported
first, then the project's modules are dropped from sys.modules and the upstream folder is put first on sys.path.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.helpers import deterministic_weights  # noqa: E402
from vidtok.model.vidtok import save_safetensors  # noqa: E402

OUT = REPO / "tests" / "golden" / "upstream"
LAYOUT = REPO / "tests" / "golden" / "upstream_ckpt_layout.json"
COMMAND = "OMP_NUM_THREADS=1 .venv/bin/python tests/golden/make_upstream_golden.py --upstream <VidTok checkout>"
WEIGHT_SEED = 0
SIZE = 32
FSQ_MARGIN = 1e-3

# file stem -> (preset, upstream config, frames). The last one is a v1.0 clip whose length is not 1 + 4k: upstream
# pads 3 copies of frame 0 and drops the first 3 decoded frames whatever T is, the project applies the v1.1 rule.
CASES = {
    "vidtok_kl_causal_488_4chn": ("vidtok_kl_causal_488_4chn", "configs/vidtok_kl_causal_488_4chn.yaml", 17),
    "vidtok_fsq_causal_488_262144": ("vidtok_fsq_causal_488_262144", "configs/vidtok_fsq_causal_488_262144.yaml", 17),
    "vidtok_kl_causal_488_4chn_v1_1": (
        "vidtok_kl_causal_488_4chn_v1_1",
        "configs/vidtok_v1_1/vidtok_kl_causal_488_4chn_v1_1.yaml",
        17,
    ),
    "vidtok_fsq_causal_488_32768_v1_1": (
        "vidtok_fsq_causal_488_32768_v1_1",
        "configs/vidtok_v1_1/vidtok_fsq_causal_488_32768_v1_1.yaml",
        17,
    ),
    "vidtok_kl_noncausal_488_4chn": ("vidtok_kl_noncausal_488_4chn", "configs/vidtok_kl_noncausal_488_4chn.yaml", 16),
    "vidtok_kl_causal_488_4chn_T18": ("vidtok_kl_causal_488_4chn", "configs/vidtok_kl_causal_488_4chn.yaml", 18),
}


def smooth_clip(seed: int, frames: int, size: int = SIZE) -> torch.Tensor:
    """(1, 3, frames, size, size) float32 in (-1, 1): a few moving sinusoids per channel, light noise, tanh."""
    rng = np.random.Generator(np.random.PCG64(seed))
    t, y, x = np.meshgrid(np.arange(frames) / 16, np.arange(size) / size, np.arange(size) / size, indexing="ij")
    clip = np.zeros((3, frames, size, size))
    for c in range(3):
        for _ in range(6):
            ft, fy, fx = rng.uniform(-1.5, 1.5), rng.uniform(-3, 3), rng.uniform(-3, 3)
            amp, phase = rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)
            clip[c] += amp * np.sin(2 * np.pi * (ft * t + fy * y + fx * x) + phase)
    clip += 0.05 * rng.standard_normal(clip.shape)
    return torch.from_numpy(np.tanh(clip).astype(np.float32))[None]


def use_upstream(root: Path) -> None:
    """Make `import vidtok` the upstream package (the project's was imported above, for tests.helpers)."""
    if not (root / "vidtok" / "models" / "autoencoder.py").is_file():
        raise SystemExit(f"{root}: not a microsoft/VidTok checkout (no vidtok/models/autoencoder.py)")
    for name in [n for n in sys.modules if n == "vidtok" or n.startswith("vidtok.")]:
        del sys.modules[name]
    # The project is installed editable: its import hook answers `import vidtok` (and vidtok.data) before sys.path
    # is searched, and the checkout on sys.path holds a regular vidtok package, which would win over upstream's
    # namespace package. Both go; upstream's folder comes first (its configs name targets like vidtok.modules.*).
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
    sys.path[:] = [str(root)] + [p for p in sys.path if Path(p or ".").resolve() != REPO]
    importlib.invalidate_caches()
    if Path(importlib.import_module("vidtok").__path__[0]).resolve() != (root / "vidtok").resolve():
        raise SystemExit("could not import the upstream vidtok package")


def upstream_commit(root: Path) -> str:
    result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    return result.stdout.strip()


def build_upstream(root: Path, config: str, with_loss: bool = False) -> torch.nn.Module:
    from omegaconf import OmegaConf

    from vidtok.modules.util import instantiate_from_config

    cfg = OmegaConf.load(root / config).model
    if not with_loss:
        cfg.params.loss_config = {"target": "torch.nn.Identity"}
    if cfg.params.regularizer_config.target.endswith("DiagonalGaussianRegularizer"):
        cfg.params.regularizer_config.params = {"sample": False}
    return instantiate_from_config(cfg)


def fsq_margin(reg: torch.nn.Module, h: torch.Tensor) -> float:
    """Smallest distance of a bounded encoder value to a rounding boundary (k + 0.5)."""
    bounded = reg.bound(h.movedim(1, -1).double())
    return float((bounded - bounded.floor() - 0.5).abs().min())


def run_case(root: Path, stem: str, commit: str) -> dict[str, float]:
    preset, config, frames = CASES[stem]
    model = build_upstream(root, config).eval()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    model.load_state_dict(deterministic_weights(shapes, WEIGHT_SEED), strict=True)
    captured: list[torch.Tensor] = []
    model.encoder.register_forward_hook(lambda _m, _i, out: captured.append(out.detach().clone()))
    fsq = model.regularization.__class__.__name__ == "FSQRegularizer"
    input_seed, margin = 1000 + frames, float("nan")
    with torch.no_grad():
        while True:
            x = smooth_clip(input_seed, frames)
            captured.clear()
            latents, recon, log = model(x)
            if not fsq:
                break
            margin = fsq_margin(model.regularization, captured[0])
            if margin >= FSQ_MARGIN:
                break
            print(f"{stem}: input seed {input_seed} has an FSQ value {margin:.2e} from a rounding boundary; next seed")
            input_seed += 1
        tensors = {"input": x, "encoder_output": captured[0], "latents": latents, "recon": recon}
        meta = {
            "upstream_repo": "https://github.com/microsoft/VidTok",
            "upstream_commit": commit,
            "upstream_config": config,
            "upstream_class": f"{type(model).__module__}.{type(model).__name__}",
            "preset": preset,
            "torch": torch.__version__,
            "numpy": np.__version__,
            "weights": f"tests.helpers.deterministic_weights(state_dict shapes, seed={WEIGHT_SEED})",
            "input": f"smooth_clip(seed={input_seed}, frames={frames}, size={SIZE})",
            "command": COMMAND,
            "notes": "loss_config -> torch.nn.Identity; KL regularizer sample=False (posterior mean); fp32, eval",
        }
        if fsq:
            indices = log["indices"].long()
            reg = model.regularization
            bounded = reg.bound(captured[0].movedim(1, -1))
            half = (reg._levels // 2).long()
            by_rounding = ((bounded.round().long() + half) * reg._basis.long()).sum(-1)
            from_indices = model.decode(log["indices"], decode_from_indices=True)[:, :, -recon.shape[2] :]  # v1.1
            tensors["indices"] = indices
            meta["fsq_margin"] = f"{margin:.6f}"
            meta["indices_equal_rounding"] = str(bool(torch.equal(by_rounding, indices)))
            meta["decode_from_indices_max_abs"] = f"{float((from_indices - recon).abs().max()):.3e}"
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{stem}.safetensors"
    save_safetensors(tensors, path, metadata=meta)
    shapes_out = {k: tuple(v.shape) for k, v in tensors.items()}
    print(f"{path.relative_to(REPO)}: {path.stat().st_size} bytes {shapes_out} {meta.get('fsq_margin', '')}")
    return {"recon_abs_max": float(recon.abs().max()), "latents_abs_max": float(latents.abs().max())}


def write_layout(root: Path, commit: str) -> None:
    """Keys of the checkpoint upstream's main.py would save for vidtok_kl_causal_488_4chn (with ema_decay set, as
    its config's commented-out line allows), from the full model with its loss built on the meta device."""
    import lightning
    import torchvision

    lpips = importlib.import_module("vidtok.modules.lpips")

    class NoDownload:  # the LPIPS trunk is built without fetching VGG weights
        @staticmethod
        def vgg16(pretrained: bool = False) -> torch.nn.Module:
            return torchvision.models.vgg16(weights=None)

    lpips.models = NoDownload
    lpips.LPIPS.load_from_pretrained = lambda self, name="vgg_lpips": None
    config = "configs/vidtok_kl_causal_488_4chn.yaml"
    from omegaconf import OmegaConf

    from vidtok.modules.util import instantiate_from_config

    cfg = OmegaConf.load(root / config).model
    cfg.params.ema_decay = 0.999
    with torch.device("meta"):
        model = instantiate_from_config(cfg)
    prefixes: dict[str, dict] = {}
    for key, value in model.state_dict().items():
        parts = key.split(".")
        prefix = ".".join(parts[:3]) if parts[0] == "loss" else parts[0]
        entry = prefixes.setdefault(prefix, {"example_key": key, "example_shape": list(value.shape), "keys": 0})
        entry["keys"] += 1
        if entry["example_key"] in ("model_ema.decay", "model_ema.num_updates"):  # show a weight's copy instead
            entry.update(example_key=key, example_shape=list(value.shape))
    layout = {
        "source": f"microsoft/VidTok {commit}, {config} (main.py training, AutoencodingEngine)",
        "how": "tests/golden/make_upstream_golden.py --layout: state_dict of the upstream model with its loss "
        "(LPIPS VGG trunk built without weights) and ema_decay=0.999, on the meta device; top-level keys from "
        "Lightning's CheckpointConnector.dump_checkpoint (read in lightning " + lightning.__version__ + "; upstream "
        "pins lightning 2.2.4 in environment.yaml) and upstream main.py's callbacks",
        "top_level_keys": {
            "epoch": "int",
            "global_step": "int (upstream steps two optimizers per batch with manual optimization)",
            "pytorch-lightning_version": "str",
            "state_dict": "dict: the prefixes below",
            "loops": "dict: fit_loop state",
            "callbacks": "dict: only callbacks with state; upstream main.py: ModelCheckpoint (monitor val/rec_loss, "
            "every_n_train_steps 5000) under a key like \"ModelCheckpoint{'monitor': 'val/rec_loss', 'mode': 'min', "
            "'every_n_train_steps': 5000, 'every_n_epochs': 0, 'train_time_interval': None}\"",
            "optimizer_states": "list of 2 Adam state_dicts: [0] encoder + decoder + regularization + loss.logvar "
            "(learn_logvar), [1] loss.discriminator",
            "lr_schedulers": "list (empty: configure_optimizers returns no scheduler)",
        },
        "absent_top_level_keys": {
            "hyper_parameters / hparams_name": "AutoencodingEngine never calls save_hyperparameters",
            "MixedPrecision": "bf16-mixed has no grad scaler, so the precision plugin saves no state",
            "DataModuleFromConfig": "the datamodule defines no state_dict",
        },
        "state_dict_prefixes": prefixes,
        "model_prefixes": ["encoder.", "decoder.", "regularization."],
        "notes": [
            "regularization.* holds no tensors for KL or for FSQ without projections (all five golden presets)",
            "model_ema.* exists only when ema_decay is set (commented out in the released configs): LitEma buffers "
            "named like the parameters without dots, plus model_ema.decay and model_ema.num_updates",
            "loss.perceptual_loss.* is the frozen LPIPS (VGG16 trunk + lin layers + scaling_layer buffers); "
            "loss.discriminator.* the 2D PatchGAN (disc_type 2d); loss.logvar a scalar",
        ],
    }
    LAYOUT.write_text(json.dumps(layout, indent=2, sort_keys=False) + "\n")
    print(f"{LAYOUT.relative_to(REPO)}: {len(prefixes)} prefixes")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True, help="a microsoft/VidTok git checkout")
    parser.add_argument("--only", nargs="*", choices=sorted(CASES), help="some cases (default: all)")
    parser.add_argument("--layout", action="store_true", help="also write upstream_ckpt_layout.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = args.upstream.resolve()
    commit = upstream_commit(root)
    use_upstream(root)
    for stem in args.only or CASES:
        run_case(root, stem, commit)
    if args.layout:
        write_layout(root, commit)


if __name__ == "__main__":
    main()
