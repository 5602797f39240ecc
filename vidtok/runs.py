"""Run folders and their record (run.json): what made a run and what it did; the dashboard and `vidtok audit` read it.

    python -m vidtok.runs outputs/train/stage1      # validate a run folder's run.json and print it

Where the platform writes under a repository root is `Outputs` (OUTPUTS: the same, relative): the data
artefacts (outputs/data), the main job's run folders (outputs/train/<stage>), its evaluation (outputs/eval), the
audit (outputs/audit), the report (outputs/report.md), the studies' own data (outputs/studies/data) and the
studies (experiments/<study>). The CLI's defaults, the pipeline, the audit and the dashboard read it.

Layout of a training run folder (`vidtok stage STAGE --run-dir RUN`):

    RUN/
      run.json                  RunRecord (below), rewritten atomically at start, every checkpoint and the end
      metrics.csv               one row per logged step: `step` + every loss term, grad norms, lr, clips_per_s
      val.csv                   the learning curve: step, val_psnr, val_ssim, trivial_psnr, trivial_ssim
      checkpoints/
        step_0000100/           a `save_pretrained` folder (config.json + model.safetensors) plus the state a
                                resume needs: training_state.safetensors (optimizers, discriminator, logvar, LeCAM
                                EMAs, weight EMA) and training_state.json (step, configs, param groups, sha256s)
        final/                  the weights to use (the EMA weights when train.ema) + the same training state

`final_checkpoint_sha256` is the sha256 of `final/model.safetensors`, the same value as its config.json's
`weights_sha256`.

A run is what made it. `identity` holds four sha256s: `params_sha256` (the settings that change what the run
computes, vidtok.train.config.computing_config), `code_sha256` (the library sources that can change its result,
CODE_PATHS, and the torch / torchvision / av versions: see `code_sha256`), `data_sha256` (the clips it read: every
clip's video sha256 and frame indices, and the crop and size, for train and val) and `parent_sha256` (the weights
it started from: stage 2's stage-1 checkpoint). A run folder is resumed or reused only when all four match;
otherwise training restarts it or refuses, naming what changed (`identity_differences`).

Schema (version 2) - the fields of RunRecord, all JSON types:
    schema_version int; run_id str; stage "stage1"|"stage2"|"onestage"; status "running"|"completed"|"failed";
    started_at, ended_at ISO-8601 UTC str (ended_at null while running); wall_time_s float (training time over all
    segments of a resumed run); steps_completed int; total_steps int; seed int;
    config {"data","model","train","loss"}: the typed configs as dicts; params {"file","sha256","profile",
    "overrides"}: where they came from; identity {params_sha256, code_sha256, data_sha256, parent_sha256: str|null};
    data_files {path: sha256} (the manifest and clip indexes read);
    git {"commit": str|null, "dirty": bool|null}; packages {name: version}; device {accelerator, devices,
    strategy, precision, world_size, torch_threads, cpu, gpu, hostname};
    parent_run str|null, parent_checkpoint str|null, parent_checkpoint_sha256 str|null (stage 2 -> stage 1);
    final_checkpoint str|null; final_checkpoint_sha256 str|null; metrics_path str|null; val_path str|null;
    resumed_at_steps [int]; error str|null (one line, set when status is "failed").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from vidtok._files import sha256_file, write_json

__all__ = [
    "OUTPUTS",
    "Outputs",
    "RECORD_NAME",
    "RunRecord",
    "RunRecordError",
    "CODE_PATHS",
    "EVALUATE",
    "IDENTITY_KEYS",
    "SCHEDULES",
    "SCHEMA_VERSION",
    "code_sha256",
    "NUMERIC_PACKAGES",
    "numeric_package_versions",
    "identity_differences",
    "device_info",
    "git_info",
    "now_iso",
    "package_versions",
    "read_run_record",
    "write_run_record",
]

SCHEMA_VERSION = 2
IDENTITY_KEYS = ("params_sha256", "code_sha256", "data_sha256", "parent_sha256")
# The library sources a result can depend on, by kind of result, relative to the folder holding the vidtok package.
# dvc.yaml lists the same paths as the deps of its train and evaluate stages (a test keeps the two equal).
_TRAIN_CODE = ("vidtok/data", "vidtok/metrics.py", "vidtok/model", "vidtok/params.py", "vidtok/train")
_EVALUATE_CODE = (
    "vidtok/data",
    "vidtok/evaluation",
    "vidtok/metrics.py",
    "vidtok/model",
    "vidtok/params.py",
    "vidtok/tokens.py",
)
# What makes the manifest (decoding, provenance, split) and, with clips.py, the clip indexes and frame caches: the
# data artefacts are keyed by these (vidtok.data.manifest.ensure_manifest, vidtok.data.clips.ensure_clip_index).
_MANIFEST_CODE = (
    "vidtok/data/config.py",
    "vidtok/data/corpus.toml",
    "vidtok/data/manifest.py",
    "vidtok/data/sources.py",
    "vidtok/data/video.py",
)
CODE_PATHS: dict[str, tuple[str, ...]] = {
    "manifest": _MANIFEST_CODE,
    "clips": (*_MANIFEST_CODE, "vidtok/data/clips.py"),
    "train": _TRAIN_CODE,
    "evaluate": _EVALUATE_CODE,
    # A study trial: its training, its evaluation, the stage chain it runs (vidtok/pipeline.py: each stage's parent
    # and folder) and the study code that chooses its steps, evaluation options and level overrides.
    "study": tuple(
        sorted(
            {
                *_TRAIN_CODE,
                *_EVALUATE_CODE,
                "vidtok/pipeline.py",
                *(f"vidtok/studies/{m}.py" for m in ("specs", "sweeps", "trial")),
            }
        )
    ),
}
# The packages whose version changes the numbers the same code computes (kernels, video decoding and colour
# conversion): part of every code identity, so a run made with another torch is not reused as if it were this one.
NUMERIC_PACKAGES = ("torch", "torchvision", "av")
RECORD_NAME = "run.json"
METRICS_NAME = "metrics.csv"
VAL_NAME = "val.csv"
CHECKPOINTS_DIR = "checkpoints"
FINAL_NAME = "final"
STAGES = ("stage1", "stage2", "onestage")
# The training stages of each schedule, in order; the evaluation stage follows the last one.
SCHEDULES: dict[str, tuple[str, ...]] = {"twostage": ("stage1", "stage2"), "onestage": ("onestage",)}
EVALUATE = "evaluate"
STATUSES = ("running", "completed", "failed")


@dataclass(frozen=True)
class Outputs:
    """Every folder and file the main job and the studies write, under a repository root (relative by default:
    OUTPUTS, whose paths print as `outputs/train/stage1` and the like)."""

    root: Path = Path(".")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def base(self) -> Path:
        return self.root / "outputs"

    @property
    def data(self) -> Path:
        """The data layer's artefacts: manifest.parquet, clips/ (clip indexes), cache/ (decoded frames)."""
        return self.base / "data"

    @property
    def train(self) -> Path:
        """The main job's run folders: train/<stage>."""
        return self.base / "train"

    def run(self, stage: str) -> Path:
        return self.train / stage

    @property
    def eval(self) -> Path:
        """The main job's evaluation: metrics.json, per_video.csv, per_frame.csv, videos/, tokens/."""
        return self.base / "eval"

    @property
    def metrics(self) -> Path:
        return self.eval / "metrics.json"

    @property
    def report(self) -> Path:
        return self.base / "report.md"

    @property
    def audit(self) -> Path:
        """`vidtok audit` of the workspace: audit.json, audit.md."""
        return self.base / "audit"

    @property
    def study_data(self) -> Path:
        """The studies' own manifest, clip indexes and frame caches, apart from the pipeline's outputs/data."""
        return self.base / "studies" / "data"

    @property
    def experiments(self) -> Path:
        return self.root / "experiments"

    def study(self, name: str) -> Path:
        """A study's folder: optuna.journal, study.json, trials.parquet, summaries, runs/trial_<n>/."""
        return self.experiments / name


OUTPUTS = Outputs()
_PACKAGES = ("vidtok", "torch", "lightning", "numpy", "safetensors", "av", "lpips", "torchmetrics", "pandas")


class RunRecordError(ValueError):
    """A run.json that is missing, unreadable or invalid: one line naming the file and the field."""


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ the record


def _check(name: str, value: Any, kinds: tuple[type, ...], optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) and bool not in kinds:
        raise RunRecordError(f"field {name!r} must be {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
    if not isinstance(value, kinds):
        got = type(value).__name__
        raise RunRecordError(f"field {name!r} must be {'/'.join(k.__name__ for k in kinds)}, got {got} {value!r}")


def _check_time(name: str, value: Any, optional: bool = False) -> None:
    _check(name, value, (str,), optional)
    if value is not None:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            raise RunRecordError(f"field {name!r} must be an ISO-8601 time, got {value!r}") from None


@dataclass(frozen=True)
class RunRecord:
    """What one training run was and did; `validate` runs on construction and on every read."""

    run_id: str
    stage: str
    status: str
    started_at: str
    config: dict[str, Any]
    params: dict[str, Any]
    seed: int
    device: dict[str, Any]
    git: dict[str, Any]
    packages: dict[str, str]
    total_steps: int
    steps_completed: int = 0
    identity: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(IDENTITY_KEYS))
    data_files: dict[str, str] = field(default_factory=dict)
    parent_run: str | None = None
    parent_checkpoint: str | None = None
    parent_checkpoint_sha256: str | None = None
    ended_at: str | None = None
    wall_time_s: float | None = None
    final_checkpoint: str | None = None
    final_checkpoint_sha256: str | None = None
    metrics_path: str | None = METRICS_NAME
    val_path: str | None = VAL_NAME
    resumed_at_steps: tuple[int, ...] = ()
    error: str | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "resumed_at_steps", tuple(self.resumed_at_steps))
        self.validate()

    def validate(self) -> None:
        if self.schema_version != SCHEMA_VERSION:
            raise RunRecordError(
                f"schema_version {self.schema_version!r} is not {SCHEMA_VERSION} (written by another vidtok version: "
                "train the run again)"
            )
        _check("run_id", self.run_id, (str,))
        if not self.run_id:
            raise RunRecordError("field 'run_id' is empty")
        if self.stage not in STAGES:
            raise RunRecordError(f"field 'stage' must be one of {STAGES}, got {self.stage!r}")
        if self.status not in STATUSES:
            raise RunRecordError(f"field 'status' must be one of {STATUSES}, got {self.status!r}")
        _check_time("started_at", self.started_at)
        _check_time("ended_at", self.ended_at, optional=True)
        for name in ("config", "params", "device", "git", "packages", "identity", "data_files"):
            _check(name, getattr(self, name), (dict,))
        missing = [k for k in ("data", "model", "train", "loss") if k not in self.config]
        if missing:
            raise RunRecordError(f"field 'config' lacks section(s) {missing}")
        if set(self.git) != {"commit", "dirty"}:
            raise RunRecordError(f"field 'git' must hold exactly commit and dirty, got {sorted(self.git)}")
        _check("git.commit", self.git["commit"], (str,), optional=True)
        _check("git.dirty", self.git["dirty"], (bool,), optional=True)
        for name in ("seed", "total_steps", "steps_completed"):
            _check(name, getattr(self, name), (int,))
            if getattr(self, name) < 0:
                raise RunRecordError(f"field {name!r} must be >= 0, got {getattr(self, name)}")
        if self.steps_completed > self.total_steps:
            raise RunRecordError(f"steps_completed {self.steps_completed} exceeds total_steps {self.total_steps}")
        _check("wall_time_s", self.wall_time_s, (int, float), optional=True)
        if set(self.identity) != set(IDENTITY_KEYS):
            raise RunRecordError(f"field 'identity' must hold exactly {', '.join(IDENTITY_KEYS)}")
        for name in (
            "parent_run",
            "parent_checkpoint",
            "parent_checkpoint_sha256",
            "final_checkpoint",
            "final_checkpoint_sha256",
            "metrics_path",
            "val_path",
            "error",
        ):
            _check(name, getattr(self, name), (str,), optional=True)
        digests = {name: getattr(self, name) for name in ("parent_checkpoint_sha256", "final_checkpoint_sha256")}
        digests |= {f"identity.{k}": v for k, v in self.identity.items()}
        for name, value in digests.items():
            if value is not None and not is_sha256(value):
                raise RunRecordError(f"field {name!r} must be a sha256 hex digest, got {value!r}")
        for step in self.resumed_at_steps:
            _check("resumed_at_steps[]", step, (int,))
        if self.status == "completed" and (self.final_checkpoint is None or self.final_checkpoint_sha256 is None):
            raise RunRecordError("a completed run needs final_checkpoint and final_checkpoint_sha256")
        if self.status == "failed" and not self.error:
            raise RunRecordError("a failed run needs its error")
        if self.stage == "stage2" and self.parent_checkpoint is None:
            raise RunRecordError("a stage2 run needs parent_checkpoint (its stage-1 checkpoint)")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["resumed_at_steps"] = list(self.resumed_at_steps)
        return data

    @classmethod
    def from_dict(cls, data: Any, source: str = "run manifest") -> RunRecord:
        if not isinstance(data, dict):
            raise RunRecordError(f"{source}: expected a JSON object, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING}
        required -= {f.name for f in dataclasses.fields(cls) if f.default_factory is not dataclasses.MISSING}
        unknown, missing = sorted(set(data) - known), sorted(required - set(data))
        if unknown:
            raise RunRecordError(f"{source}: unknown field(s) {unknown}")
        if missing:
            raise RunRecordError(f"{source}: missing field(s) {missing}")
        try:
            return cls(**data)
        except RunRecordError as err:
            raise RunRecordError(f"{source}: {err}") from None

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)


def record_path(run_dir_or_file: str | os.PathLike[str]) -> Path:
    path = Path(run_dir_or_file)
    return path / RECORD_NAME if path.is_dir() or path.suffix != ".json" else path


def write_run_record(run_dir: str | os.PathLike[str], record: RunRecord) -> Path:
    record.validate()
    path = Path(run_dir) / RECORD_NAME
    write_json(path, record.to_dict())
    return path


def read_run_record(run_dir_or_file: str | os.PathLike[str]) -> RunRecord:
    """The validated manifest of a run folder (or a run.json path); RunRecordError otherwise."""
    path = record_path(run_dir_or_file)
    if not path.is_file():
        raise RunRecordError(f"{path}: no run manifest (not a vidtok run folder, or the run never started)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunRecordError(f"{path}: not valid JSON ({err})") from None
    return RunRecord.from_dict(data, source=str(path))


# ------------------------------------------------------------------------------------------------ identity


def is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def sha256_json(obj: Any) -> str:
    """sha256 of canonical JSON (sorted keys, compact): the same value for the same content in any process."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def code_files(kind: str) -> list[Path]:
    """The files of CODE_PATHS[kind] in this installation of vidtok (the .py files of its folders), sorted."""
    if kind not in CODE_PATHS:
        raise ValueError(f"code kind must be one of {', '.join(CODE_PATHS)}, got {kind!r}")
    base = Path(__file__).resolve().parent.parent  # the folder holding vidtok/
    files: list[Path] = []
    for rel in CODE_PATHS[kind]:
        path = base / rel
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return sorted(files)


def numeric_package_versions() -> dict[str, str | None]:
    """The installed versions of NUMERIC_PACKAGES (None for one that is not installed)."""
    out: dict[str, str | None] = {}
    for name in NUMERIC_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def code_sha256(kind: str) -> str:
    """sha256 over (path, sha256) of the library sources a `kind` result depends on (CODE_PATHS) and the versions
    of NUMERIC_PACKAGES: a changed line anywhere in them (vidtok/model, vidtok/data, ...), or another torch,
    torchvision or PyAV, is another code identity."""
    base = Path(__file__).resolve().parent.parent
    files = [[Path(os.path.relpath(f, base)).as_posix(), sha256_file(f)] for f in code_files(kind)]
    return sha256_json({"files": files, "packages": numeric_package_versions()})


IDENTITY_WHAT = {
    "params_sha256": "params",
    "code_sha256": "code (or the torch / torchvision / av version)",
    "data_sha256": "data",
    "parent_sha256": "parent checkpoint",
}


def identity_differences(saved: dict[str, Any] | None, current: dict[str, Any]) -> list[str]:
    """What differs between a recorded identity and the current one, one phrase each ("data changed: sha256
    ab12cd34 -> 9f8e7d6c"); an unknown value (None, e.g. a dataset that cannot be hashed) never matches."""
    if not saved:
        return ["no identity recorded (made by an older vidtok)"]
    out = []
    for key in IDENTITY_KEYS:
        old, new = saved.get(key), current.get(key)
        if old == new and (new is not None or key == "parent_sha256"):  # no parent is a known value
            continue
        out.append(f"{IDENTITY_WHAT[key]} changed: sha256 {str(old)[:12]} -> {str(new)[:12]}")
    return out


# ------------------------------------------------------------------------------------------------ environment


# DVC rewrites dvc.lock after every stage of `dvc repro`, and the pipeline rewrites its committed `cache: false`
# outputs (outputs/eval/metrics.json, outputs/report.md), so a run started by a later stage or a later repro finds
# them modified: that is the pipeline's own bookkeeping, not a change to the code or the parameters the run used.
PIPELINE_BOOKKEEPING = frozenset({"dvc.lock"})
PIPELINE_OUTPUTS = f"{OUTPUTS.base}/"


def modified_tracked_files(porcelain: str) -> list[str]:
    """Paths in `git status --porcelain` output, less the pipeline's own bookkeeping files (see above)."""
    paths = [line[3:] for line in porcelain.splitlines() if line.strip()]
    return [p for p in paths if p.rsplit("/", 1)[-1] not in PIPELINE_BOOKKEEPING and not p.startswith(PIPELINE_OUTPUTS)]


def git_info(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Commit of the repository holding `path` (default: this package) and whether tracked files differ from it.
    Untracked files do not count as dirty (outputs and data live in ignored folders), nor does dvc.lock.
    None when not in git."""
    where = str(path or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "-C", where, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(modified_tracked_files(status))}


def workspace_git_info() -> dict[str, Any]:
    """git_info of the workspace a run is launched from (the current folder: where dvc.yaml, params.yaml and the
    code deps live), else of this package's repository."""
    info = git_info(os.getcwd())
    return info if info["commit"] is not None else git_info()


def package_versions() -> dict[str, str]:

    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


# The CPU features that decide which kernels run and how fast: AVX2 (the fp32 baseline), AVX-512, and native bf16
# arithmetic (AVX512-BF16, AMX); oneDNN takes its native bf16 convolutions only where one of the last three is there.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_description() -> str:
    """This machine's CPU as every benchmark row and run record labels it: model name, core count and the
    CPU_FLAGS it has, e.g. "AMD EPYC (2 cores; avx2 avx512f avx512_bf16)"; the machine type off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    have = " ".join(flag for flag in CPU_FLAGS if flag in flags) or "no avx2"
    return f"{model} ({os.cpu_count()} cores; {have})"


def device_info(
    accelerator: str,
    devices: int,
    strategy: str,
    precision: str,
    world_size: int,
    *,
    torch_threads: int,
    gpu: str | None = None,
) -> dict[str, Any]:
    """The `device` record of a run: how it was trained and on what (the caller knows torch; this module does not
    import it, so the dashboard can read run folders without torch)."""
    return {
        "accelerator": accelerator,
        "devices": devices,
        "strategy": strategy,
        "precision": precision,
        "world_size": world_size,
        "torch_threads": torch_threads,
        "cpu": cpu_description(),
        "gpu": gpu,
        "hostname": socket.gethostname(),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vidtok.runs RUN_DIR_OR_RUN_JSON", file=sys.stderr)
        return 2
    try:
        manifest = read_run_record(argv[0])
    except RunRecordError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps(manifest.to_dict(), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
