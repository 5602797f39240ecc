"""What the dashboard reads, from files only: no torch, no training, no recomputed metrics.

    python -m dashboard.data [ROOT]     # list what the dashboard finds under ROOT (default: the data root below)

The data root is `--root DIR` after the streamlit command (`streamlit run dashboard/app.py -- --root DIR`), else
the environment variable VIDTOK_ROOT, else the current directory. Under it:

    outputs/train/{stage1,stage2,onestage}/  pipeline run folders (vidtok/runs.py: run.json, metrics.csv, val.csv)
    outputs/eval/                            evaluation (vidtok/evaluation/evaluate.py: metrics.json, per_video.csv,
                                             videos/*.mp4; optional per_frame.csv and tokens/*.tokens)
    outputs/audit/audit.json, audit.md       `vidtok audit`
    experiments/<study>/                     studies (vidtok/studies/results.py: trials.parquet, study.json, summary.*)
    params.yaml, data.dvc                    the profiles, the raw data's hash

Every parse is cached (st.cache_data) on the file's path, mtime and size, so a rerun re-reads only what changed.
Folder listings are not cached: they are cheap and must see new files. A missing file reads as None (the page
shows an empty state naming the command that makes it); a corrupt or schema-invalid one raises DataError, whose
message is one line naming the file and the problem.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
import yaml

from vidtok import runs
from vidtok.formats import TokenFileError, read_token_file
from vidtok.studies import results
from vidtok.studies.specs import STUDIES as SPECS
from vidtok.studies.specs import StudySpec

ROOT_ENV = "VIDTOK_ROOT"
REPO = Path(__file__).resolve().parents[1]
PIPELINE_STAGES = runs.STAGES
METRICS_FORMAT = "vidtok-metrics"  # vidtok/evaluation/evaluate.py
AUDIT_STATUSES = ("pass", "fail", "skip")

CMD_PIPELINE = "make run"  # README main job: sample data -> dvc repro -> metrics
CMD_EVALUATE = f"vidtok evaluate --checkpoint {runs.OUTPUTS.run('stage2')} -o {runs.OUTPUTS.metrics}"
CMD_AUDIT = "vidtok audit"
CMD_PREFECT = "make prefect-up"


class DataError(Exception):
    """A results file that exists but cannot be used: one line naming the file and the problem."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


# The studies, their questions and the Prefect command that runs each: the library's specs (vidtok.studies.specs).
STUDIES: dict[str, StudySpec] = SPECS


# ------------------------------------------------------------------------------------------------ the data root


def root() -> Path:
    """`--root DIR` in the script arguments (after `--` on the streamlit command line), else $VIDTOK_ROOT, else
    the current directory."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg == "--root" and i + 1 < len(argv):
            return Path(argv[i + 1]).expanduser().resolve()
        if arg.startswith("--root="):
            return Path(arg.split("=", 1)[1]).expanduser().resolve()
    env = os.environ.get(ROOT_ENV)
    return Path(env).expanduser().resolve() if env else Path.cwd().resolve()


def display(path: str | os.PathLike[str]) -> str:
    """A path as the user should read it: relative to the data root where it lies inside it."""
    p = Path(path)
    try:
        return p.resolve().relative_to(root()).as_posix()
    except ValueError:
        return str(p)


# ------------------------------------------------------------------------------------------------ cached parsing


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        s = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (s.st_mtime_ns, s.st_size) if path.is_file() else None


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _json_text(path: str) -> Any:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{display(path)}: not UTF-8 text (a binary or truncated file?)") from None
    except OSError as err:
        raise DataError(f"{display(path)}: unreadable ({err.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{display(path)}: not valid JSON ({err.msg} at line {err.lineno})") from None


@st.cache_data(show_spinner=False, max_entries=512)
def _json_cached(path: str, stamp: tuple[int, int]) -> Any:
    return _json_text(path)


def read_json(path: Path) -> Any | None:
    stamp = _stamp(path)
    return None if stamp is None else _json_cached(str(path), stamp)


@st.cache_data(show_spinner=False, max_entries=256)
def _csv_cached(path: str, stamp: tuple[int, int], required: tuple[str, ...]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{display(path)}: not a readable CSV table ({first})") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{display(path)}: missing column(s) {missing}; found {list(df.columns)[:8]}")
    return df


def read_csv(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame | None:
    stamp = _stamp(path)
    return None if stamp is None else _csv_cached(str(path), stamp, tuple(required))


@st.cache_data(show_spinner=False, max_entries=64)
def _yaml_cached(path: str, stamp: tuple[int, int]) -> Any:

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(f"{display(path)}: not valid YAML ({first})") from None


def read_yaml(path: Path) -> Any | None:
    stamp = _stamp(path)
    return None if stamp is None else _yaml_cached(str(path), stamp)


def _one_line(err: Exception, path: str) -> str:
    return str(err).replace(path, display(path))


# ------------------------------------------------------------------------------------------------ run folders


@st.cache_data(show_spinner=False, max_entries=256)
def _run_record_cached(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    try:
        return runs.read_run_record(path).to_dict()
    except runs.RunRecordError as err:
        raise DataError(_one_line(err, path)) from None


def read_run_record(run_dir: Path) -> dict[str, Any] | None:
    """The validated run.json of a run folder as a dict (vidtok.runs.RunRecord fields), None without one."""
    path = run_dir / "run.json"
    stamp = _stamp(path)
    return None if stamp is None else _run_record_cached(str(path), stamp)


def pipeline_runs(base: Path) -> list[Path]:
    """The DVC pipeline's run folders that hold a run.json, in pipeline order."""
    folders = [runs.Outputs(base).run(stage) for stage in PIPELINE_STAGES]
    return [f for f in folders if (f / "run.json").is_file()]


def read_val_curve(run_dir: Path, record: dict[str, Any] | None = None) -> pd.DataFrame | None:
    name = (record or {}).get("val_path") or "val.csv"
    return read_csv(run_dir / name, required=("step",))


# ------------------------------------------------------------------------------------------------ studies


@st.cache_data(show_spinner=False, max_entries=64)
def _trials_cached(folder: str, stamp: tuple[int, int]) -> pd.DataFrame:
    try:
        return results.read_trials(folder)
    except results.StudyFileError as err:
        raise DataError(_one_line(err, str(Path(folder) / "trials.parquet"))) from None


def read_trials(study_dir: Path) -> pd.DataFrame | None:
    """The validated trials table (vidtok.studies.results.TrialsSchema), None when the study has not written one."""
    stamp = _stamp(study_dir / "trials.parquet")
    return None if stamp is None else _trials_cached(str(study_dir), stamp)


def read_study_json(study_dir: Path) -> dict[str, Any] | None:
    data = read_json(study_dir / "study.json")
    if data is not None and not isinstance(data, dict):
        raise DataError(f"{display(study_dir / 'study.json')}: expected a JSON object, got {type(data).__name__}")
    return data


def study_dirs(base: Path) -> dict[str, Path]:
    """The four studies of the platform (present or not), then any other study folder under experiments/."""
    found = {name: runs.Outputs(base).study(name) for name in STUDIES}
    exp = runs.Outputs(base).experiments
    if exp.is_dir():
        for child in sorted(exp.iterdir()):
            if child.name not in found and ((child / "trials.parquet").is_file() or (child / "study.json").is_file()):
                found[child.name] = child
    return found


# ------------------------------------------------------------------------------------------------ evaluation


def _require(cond: bool, path: Path, problem: str) -> None:
    if not cond:
        raise DataError(f"{display(path)}: {problem}")


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_eval(folder: Path) -> dict[str, Any] | None:
    """metrics.json of an evaluation folder (format vidtok-metrics, vidtok/evaluation/evaluate.py), checked for the
    fields the dashboard shows; None when absent."""
    path = folder / "metrics.json"
    data = read_json(path)
    if data is None:
        return None
    _require(isinstance(data, dict), path, f"expected a JSON object, got {type(data).__name__}")
    _require(data.get("format") == METRICS_FORMAT, path, f"not a vidtok metrics file (format {data.get('format')!r})")
    summary, metrics = data.get("summary"), data.get("metrics")
    _require(isinstance(summary, dict) and _is_num(summary.get("psnr")), path, "summary.psnr missing or not a number")
    _require(isinstance(metrics, dict), path, "'metrics' missing or not an object")
    for name, record in metrics.items():
        _require(isinstance(record, dict), path, f"metrics.{name} is not an object")
        if record.get("available") is False:
            continue
        _require(_is_num(record.get("value")), path, f"metrics.{name}.value missing or not a number")
        _require(isinstance(record.get("protocol"), dict), path, f"metrics.{name}.protocol missing")
    for key in ("checkpoint", "data", "unavailable", "baseline_trivial_codec"):
        _require(isinstance(data.get(key, {}), dict), path, f"'{key}' is not an object")
    return data


def eval_folders(base: Path) -> list[Path]:
    """Evaluation folders: the pipeline's outputs/eval, then those inside study trial runs."""
    candidates = [runs.Outputs(base).eval]
    candidates += sorted(base.glob("experiments/*/runs/*/eval"))
    candidates += sorted(base.glob("experiments/*/runs/*/*/eval"))
    return [c for c in candidates if (c / "metrics.json").is_file() or (c / "videos").is_dir()]


def eval_videos(folder: Path) -> list[Path]:
    videos = folder / "videos"
    return sorted(videos.glob("*.mp4")) if videos.is_dir() else []


def per_frame_table(folder: Path, record: dict[str, Any] | None) -> pd.DataFrame | None:
    """Per-frame PSNR: metrics.json's psnr.per_frame (clip-major) where evaluate kept it, else per_frame.csv
    (columns video, clip, frame, psnr); None when the evaluation recorded none."""
    psnr = ((record or {}).get("metrics") or {}).get("psnr") or {}
    values = psnr.get("per_frame")
    if isinstance(values, list) and values and all(_is_num(v) for v in values):
        clip_len = int(((record or {}).get("data") or {}).get("clip_length") or len(values))
        idx = np.arange(len(values))
        return pd.DataFrame({"clip": idx // clip_len, "frame": idx % clip_len, "index": idx, "psnr": values})
    table = read_csv(folder / "per_frame.csv", required=("frame", "psnr"))
    if table is None:
        return None
    table = table.copy()
    table["index"] = np.arange(len(table))
    return table


# ------------------------------------------------------------------------------------------------ token files


def num_codes(model_config: dict[str, Any]) -> int | None:
    """Codebook size from a model config dict (the rule of vidtok.model.config.ModelConfig.num_codes)."""
    reg = model_config.get("regularizer")
    if reg == "fsq":
        return int(np.prod(model_config.get("fsq_levels") or [0])) or None
    if reg == "lfq":
        return 2 ** int(model_config.get("z_channels") or 0)
    if reg == "vq":
        return int(model_config.get("codebook_size") or 0) or None
    return None


@st.cache_data(show_spinner=False, max_entries=64)
def _tokens_cached(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    try:
        meta, tensor = read_token_file(path)  # the library's reader: format, version and content digest checked
    except TokenFileError as err:
        raise DataError(str(err).replace(path, display(path), 1)) from None
    name, kind = display(path), meta["kind"]
    try:
        model_config = json.loads(meta.get("model_config") or "{}")
        geometry = json.loads(meta.get("geometry") or "{}")
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: bad metadata ({err.msg})") from None
    out: dict[str, Any] = {
        "kind": kind,
        "source": meta.get("source", ""),
        "fps": meta.get("fps"),
        "num_frames": meta.get("num_frames"),
        "geometry": geometry,
        "model_config": model_config,
        "num_codes": num_codes(model_config),
        "shape": tuple(int(s) for s in tensor.shape),
    }
    if kind == "indices":
        if tensor.ndim != 4 or tensor.shape[0] != 1:
            raise DataError(f"{name}: indices shape {tensor.shape} is not (1, t, h, w)")
        out["indices"] = tensor[0].astype(np.int64)
    return out


def read_tokens(path: Path) -> dict[str, Any] | None:
    """A token file (vidtok/tokens.py format): kind, metadata, and for discrete models `indices` (t, h, w)."""
    stamp = _stamp(path)
    return None if stamp is None else _tokens_cached(str(path), stamp)


def token_files(eval_folder: Path) -> list[Path]:
    folder = eval_folder / "tokens"
    return sorted(folder.glob("*.tokens")) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------------ audit


def read_audit(base: Path) -> dict[str, Any] | None:
    """outputs/audit/audit.json of `vidtok audit`: passed, checked_at, target, checks [{name, status, detail}]."""
    path = runs.Outputs(base).audit / "audit.json"
    data = read_json(path)
    if data is None:
        return None
    _require(isinstance(data, dict), path, f"expected a JSON object, got {type(data).__name__}")
    _require(isinstance(data.get("passed"), bool), path, "'passed' missing or not true/false")
    checks = data.get("checks")
    _require(isinstance(checks, list), path, "'checks' missing or not a list")
    for i, check in enumerate(checks):
        _require(isinstance(check, dict) and isinstance(check.get("name"), str), path, f"checks[{i}] has no name")
        status = check.get("status")
        _require(status in AUDIT_STATUSES, path, f"checks[{i}].status must be pass, fail or skip, got {status!r}")
    _require(isinstance(data.get("tolerance", {}), dict | type(None)), path, "'tolerance' is not an object")
    return data


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


# ------------------------------------------------------------------------------------------------ command line


def main(argv: list[str]) -> int:
    base = Path(argv[0]).resolve() if argv else root()
    print(f"data root: {base}")
    for run in pipeline_runs(base):
        print(f"  run       {display(run)}")
    for folder in eval_folders(base):
        print(f"  eval      {display(folder)}")
    for name, folder in study_dirs(base).items():
        print(f"  study     {name}: {'trials.parquet' if (folder / 'trials.parquet').is_file() else 'not run'}")
    audit = runs.Outputs(base).audit / "audit.json"
    print(f"  audit     {'present' if audit.is_file() else 'not run'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
