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
message is one line naming the file and the problem. Every file is read and checked by the library's own reader:
vidtok.formats (metrics.json, audit.json, token files), vidtok.runs (run.json), vidtok.studies.results (trials).
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
from vidtok.formats import FormatError, is_number, load_json, read_audit_record, read_metrics_record, read_token_file
from vidtok.studies import results
from vidtok.studies.specs import STUDIES as SPECS
from vidtok.studies.specs import StudySpec

ROOT_ENV = "VIDTOK_ROOT"
REPO = Path(__file__).resolve().parents[1]
PIPELINE_STAGES = runs.STAGES

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


# The library's readers of JSON files (vidtok.formats), by name: each raises a one-line FormatError naming the file.
JSON_READERS = {"json": load_json, "metrics": read_metrics_record, "audit": read_audit_record}


@st.cache_data(show_spinner=False, max_entries=512)
def _json_cached(reader: str, path: str, stamp: tuple[int, int]) -> Any:
    try:
        return JSON_READERS[reader](path)
    except FormatError as err:
        raise DataError(_one_line(err, path)) from None


def read_json(path: Path, reader: str = "json") -> Any | None:
    """`path` read by JSON_READERS[reader] (plain JSON, a metrics record, an audit record); None when absent."""
    stamp = _stamp(path)
    return None if stamp is None else _json_cached(reader, str(path), stamp)


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


def read_eval(folder: Path) -> dict[str, Any] | None:
    """metrics.json of an evaluation folder, read and checked by vidtok.formats.read_metrics_record (the reader
    `vidtok audit` uses); None when absent."""
    return read_json(folder / "metrics.json", "metrics")


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
    if isinstance(values, list) and values and all(is_number(v) for v in values):
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


@st.cache_data(show_spinner=False, max_entries=64)
def _tokens_cached(path: str, stamp: tuple[int, int]) -> dict[str, Any]:
    try:
        meta, tensor = read_token_file(path)  # the library's reader: format, version and content digest checked
    except FormatError as err:
        raise DataError(str(err).replace(path, display(path), 1)) from None
    name, kind = display(path), meta["kind"]
    try:
        model_config = json.loads(meta.get("model_config") or "{}")
        geometry = json.loads(meta.get("geometry") or "{}")
        model = json.loads(meta.get("model") or "{}")
    except json.JSONDecodeError as err:
        raise DataError(f"{name}: bad metadata ({err.msg})") from None
    out: dict[str, Any] = {
        "kind": kind,
        "source": meta.get("source", ""),
        "fps": meta.get("fps"),
        "num_frames": meta.get("num_frames"),
        "geometry": geometry,
        "model_config": model_config,
        "weights_sha256": model.get("weights_sha256") if isinstance(model, dict) else None,
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
    """outputs/audit/audit.json of `vidtok audit` (passed, checked_at, target, checks [{name, status, detail}]), read
    and checked by vidtok.formats.read_audit_record; None when absent."""
    path = runs.Outputs(base).audit / "audit.json"
    return read_json(path, "audit")


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
