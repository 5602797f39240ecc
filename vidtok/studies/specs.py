"""The studies of the paper's open questions: each one factor, its levels, and what a trial of a level runs.

    vidtok study --list          # the studies and their levels

A Level carries what vidtok.studies.trial.run_trial needs for it (param overrides, staging schedule, the frame rate
its clips must exist at); vidtok.studies.sweeps runs them as Optuna studies. Torch- and Optuna-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from vidtok.studies.results import FACTORS, LOWER_IS_BETTER

__all__ = ["DEFAULT_SEEDS", "FSQ_LEVELS", "STUDIES", "STUDY_EVAL_CLIPS", "Level", "StudySpec", "get_study"]

DEFAULT_SEEDS = (0, 1, 2)  # three: the fewest that give a sample spread with a usable 95% interval
# The cap on val and test clips a committed trial is scored on (eval_clips). A cap, not a count: each video gives at
# most data.eval_clips_per_video (8) non-overlapping clips, so on the corpus's 4 val and 6 test videos a trial scores
# 21 val and 30 test clips. The count it really scored is in its metrics files and the trials table.
STUDY_EVAL_CLIPS = 96

# FSQ level tuples per bits of codebook size: products are exact powers of two (8 = 2^3, 4 = 2^2), 8 levels per
# channel where possible as in the released models (8^4 = 4,096, 8^5 = 32,768, 8^6 = 262,144 codes).
FSQ_LEVELS: dict[int, tuple[int, ...]] = {
    8: (8, 8, 4),  # 64 * 4 = 256
    10: (8, 8, 4, 4),  # 64 * 16 = 1,024
    12: (8, 8, 8, 8),  # 4,096
    14: (8, 8, 8, 8, 4),  # 4,096 * 4 = 16,384
    16: (8, 8, 8, 8, 4, 4),  # 4,096 * 16 = 65,536
    18: (8, 8, 8, 8, 8, 8),  # 262,144
}
assert all(math.prod(v) == 2**k for k, v in FSQ_LEVELS.items())


@dataclass(frozen=True)
class Level:
    """One setting of a study's factor: what run_trial gets for it."""

    label: str
    value: float | None  # numeric axis: fps, bits per token, stage-1 share of the step budget
    regularizer: str | None = None  # the model.regularizer a level sets, where the study varies it
    overrides: tuple[str, ...] = ()  # `section.key=value` strings for run_trial
    schedule: str = "twostage"
    stage1_fraction: float | None = None
    stage2_trains: str = "decoder"
    fps: float | None = None  # the training frame rate it needs clips for; None: the profile's train.fps


@dataclass(frozen=True)
class StudySpec:
    """A study: the question, the factor it varies and its levels (the categorical grid, with the seeds)."""

    name: str
    factor: str
    title: str  # the factor in a few words, as the dashboard's page names it
    question: str
    levels: tuple[Level, ...]
    baseline: str | None = None  # the paper's choice: every level is compared with it, paired by seed
    metric: str = "psnr"

    def __post_init__(self) -> None:
        if self.factor not in FACTORS:
            raise ValueError(f"study {self.name}: factor must be one of {', '.join(FACTORS)}, got {self.factor!r}")
        labels = [lv.label for lv in self.levels]
        if len(set(labels)) != len(labels):
            raise ValueError(f"study {self.name}: level labels must be unique, got {labels}")
        if self.baseline is not None and self.baseline not in labels:
            raise ValueError(f"study {self.name}: baseline {self.baseline!r} is not one of its levels")

    def deployment_command(
        self,
        profile: str | None = "study",
        seeds: tuple[int, ...] | list[int] = DEFAULT_SEEDS,
        eval_clips: int = STUDY_EVAL_CLIPS,
        n_trials: int | None = None,
    ) -> str:
        """The command that runs this study on a local Prefect server (flows/, `make prefect-up`); by default the
        whole grid (every level at every seed) as the committed results were run. profile None: params.yaml's."""
        n = len(self.levels) * len(seeds) if n_trials is None else n_trials
        chosen = "" if profile is None else f" --param profile={profile}"
        return (
            f"prefect deployment run {self.name}/{self.name} --param n_trials={n}{chosen} "
            f"--param 'seeds={list(seeds)}' --param eval_clips={eval_clips}"
        )

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    def level(self, label: str) -> Level:
        for lv in self.levels:
            if lv.label == label:
                return lv
        raise ValueError(f"study {self.name}: no level {label!r}; levels: {', '.join(lv.label for lv in self.levels)}")


# LFQ and VQ run at three of FSQ's sizes: the smallest, the paper's smallest FSQ (4,096) and its largest (262,144).
OTHER_QUANTIZER_BITS = (8, 12, 18)


def _codebook_levels() -> tuple[Level, ...]:
    """FSQ at 2^8 ... 2^18 codes, then LFQ (bits = channels) and VQ (a learned codebook of 2^bits vectors, as
    many latent channels as FSQ uses at that size) at OTHER_QUANTIZER_BITS."""
    out = []
    for quantizer in ("fsq", "lfq", "vq"):
        for bits, levels in FSQ_LEVELS.items():
            if quantizer != "fsq" and bits not in OTHER_QUANTIZER_BITS:
                continue
            if quantizer == "fsq":
                changes = [f"model.fsq_levels={list(levels)}"]
            elif quantizer == "lfq":
                changes = ["model.fsq_levels=[]", f"model.z_channels={bits}"]
            else:
                changes = ["model.fsq_levels=[]", f"model.codebook_size={2**bits}", f"model.z_channels={len(levels)}"]
            overrides = (f"model.regularizer={quantizer}", *changes)
            out.append(Level(f"{quantizer.upper()} 2^{bits}", float(bits), quantizer, overrides))
    return tuple(out)


def _staging_levels() -> tuple[Level, ...]:
    """One stage at the high resolution; two stages with the profile's stage1 + stage2 step budget split at 25, 50
    and 75 % (the switch point); the 75 % split again with the whole model trained in stage 2 (paper Table 4)."""
    out = [Level("onestage", 0.0, schedule="onestage")]
    for share in (0.25, 0.5, 0.75):
        out.append(Level(f"twostage {share:.0%}", share, stage1_fraction=share))
    out.append(Level("twostage 75% whole model", 0.75, stage1_fraction=0.75, stage2_trains="all"))
    return tuple(out)


def _ablation_levels() -> tuple[Level, ...]:
    """The labels match the dashboard's paper rows (vidtok/studies/paper.py): Table 2 architecture variants and the
    Table 3 quantizers at 262,144 codes."""
    q18 = FSQ_LEVELS[18]
    return (
        Level("VidTok", None),
        Level("w/o AlphaBlender", None, overrides=("model.temporal_resampler=conv",)),
        Level("fixed alpha", None, overrides=("model.alpha=fixed",)),
        Level("fully 3D", None, overrides=("model.fully_3d=true",)),
        Level("FSQ 262,144", None, "fsq", ("model.regularizer=fsq", f"model.fsq_levels={list(q18)}")),
        Level("LFQ 262,144", None, "lfq", ("model.regularizer=lfq", "model.fsq_levels=[]", "model.z_channels=18")),
        Level(
            "VQ 262,144",
            None,
            "vq",
            (
                "model.regularizer=vq",
                "model.fsq_levels=[]",
                f"model.codebook_size={2**18}",
                f"model.z_channels={len(q18)}",
            ),
        ),
    )


STUDIES: dict[str, StudySpec] = {
    s.name: s
    for s in (
        StudySpec(
            "sweep-fps",
            "fps",
            "Frame rate",
            "Which training frame rate gives the best reconstructions? (the paper compares 3 and 8 fps)",
            tuple(
                Level(f"{f:g} fps", float(f), overrides=(f"train.fps={f}",), fps=float(f)) for f in (1, 2, 3, 4, 8, 30)
            ),
            baseline="3 fps",  # the paper trains at 3 fps
        ),
        StudySpec(
            "sweep-codebook",
            "log2_codes",
            "Codebook size",
            "How does quality scale with the codebook size, per quantizer (FSQ, LFQ, VQ)?",
            _codebook_levels(),
            baseline="FSQ 2^18",  # the released FSQ models' 262,144 codes
        ),
        StudySpec(
            "sweep-staging",
            "schedule",
            "Staging schedule",
            "Which staging schedule gives the best quality for its compute?",
            _staging_levels(),
            baseline="twostage 75%",  # two stages, encoder frozen in stage 2: the paper's recipe (Table 4)
        ),
        StudySpec(
            "ablations",
            "variant",
            "Ablations",
            "Do the paper's design choices (AlphaBlender, learnable alpha, 2D+1D blocks, FSQ) hold up when rerun?",
            _ablation_levels(),
            baseline="VidTok",
        ),
    )
}


def get_study(name: str) -> StudySpec:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; studies: {', '.join(STUDIES)}")
    return STUDIES[name]
