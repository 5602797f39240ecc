"""The project's file formats that more than one layer reads, torch-free: the token file of `vidtok encode`, the
metrics record of `vidtok evaluate` and the audit record of `vidtok audit`; their readers and validators.

    python -m vidtok.formats clip.tokens            # check a token file (format, version, content digest)
    python -m vidtok.formats outputs/eval/metrics.json outputs/audit/audit.json   # check any of the three

A token file is a safetensors file holding one tensor, `indices` (int32, (1, t, h, w)) for discrete models or
`latents` (float32, (1, z, t, h, w)) otherwise, and string metadata that makes it self-contained (vidtok.tokens
writes it): the model, its config, the source file, fps, frame count, geometry, the clip length, and
`content_sha256`, a digest over every other header field and the tensor's dtype, shape and bytes. So an edited fps
or geometry is caught like an edited token, and the library (vidtok.tokens) and the dashboard read the same rule.

A metrics record (metrics.json; vidtok.evaluation.evaluate writes it) is a JSON object: `format` "vidtok-metrics",
`version`, `summary` (the headline numbers by name, `psnr` always), `metrics` (name -> {value, protocol, per_clip,
...}, or {available: false, reason} for a metric not measured), and the objects `checkpoint`, `data`,
`baseline_trivial_codec` and `unavailable`. The dashboard, `vidtok audit` and `vidtok report` read it through
read_metrics_record.

An audit record (audit.json; vidtok.audit.record writes it) is a JSON object: `passed` (true / false), `target`,
`checked_at`, `workspace`, `not_run_here`, `tolerance` (metric -> absolute tolerance of the re-run) and `checks`,
a list of {name, status (pass / fail / skip), detail, enable}. The dashboard reads it through read_audit_record.

Metrics that are better when lower (LPIPS, FVD: distances) are named here once, for the studies' choice of the
best level, Optuna's direction and the dashboard's labels.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError, safe_open

__all__ = [
    "AUDIT_FAIL",
    "AUDIT_PASS",
    "AUDIT_SKIP",
    "AUDIT_STATUSES",
    "LOWER_IS_BETTER",
    "METRICS_FORMAT",
    "METRICS_FORMAT_VERSION",
    "TOKEN_FORMAT",
    "TOKEN_FORMAT_VERSION",
    "TOKEN_KINDS",
    "AuditFileError",
    "FormatError",
    "MetricsFileError",
    "TokenFileError",
    "is_number",
    "load_json",
    "parse_count",
    "parse_fraction",
    "read_audit_record",
    "read_metrics_record",
    "read_token_file",
    "token_content_sha256",
    "validate_audit_record",
    "validate_metrics_record",
]

TOKEN_FORMAT = "vidtok-tokens"
# Version 2: `content_sha256` covers the header as well as the tensor (version 1 hashed the tensor alone, so an
# edited fps or geometry decoded silently wrong); version 1 files are refused with the command that remakes them.
TOKEN_FORMAT_VERSION = "2"
TOKEN_KINDS = ("indices", "latents")

METRICS_FORMAT = "vidtok-metrics"
METRICS_FORMAT_VERSION = 1
# The objects a metrics record may hold besides `summary` and `metrics` (each optional, an object when present).
METRICS_SECTIONS = ("checkpoint", "data", "unavailable", "baseline_trivial_codec")
# Distances: a smaller LPIPS or FVD is the better reconstruction; every other metric is better when higher.
LOWER_IS_BETTER = ("lpips", "fvd")

AUDIT_PASS, AUDIT_FAIL, AUDIT_SKIP = AUDIT_STATUSES = ("pass", "fail", "skip")


class FormatError(ValueError):
    """A file of one of these formats that cannot be used: one line naming the file and the problem."""


class TokenFileError(FormatError):
    """A token file that cannot be used: one line naming the file and the problem."""


class MetricsFileError(FormatError):
    """A metrics record (metrics.json) that cannot be used: one line naming the file and the missing or bad key."""


class AuditFileError(FormatError):
    """An audit record (audit.json) that cannot be used: one line naming the file and the missing or bad key."""


def token_content_sha256(metadata: Mapping[str, str], array: np.ndarray) -> str:
    """sha256 over the header (every metadata field but this digest, as sorted compact JSON) and the tensor's dtype
    name, shape and bytes (C order)."""
    header = {k: v for k, v in metadata.items() if k != "content_sha256"}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    digest.update(f"{np.dtype(array.dtype).name}{tuple(int(s) for s in array.shape)}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def parse_fraction(text: str, what: str) -> Fraction:
    """A positive rational from a header ("30000/1001", "25"); ValueError naming `what` otherwise."""
    num, sep, den = str(text).partition("/")
    try:
        value = Fraction(int(num), int(den)) if sep else Fraction(str(text))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{what} {text!r} is not a rational number like 30000/1001") from None
    if value <= 0:
        raise ValueError(f"{what} {text!r} must be positive")
    return value


def parse_count(value: object, what: str, minimum: int = 1) -> int:
    """An integer >= `minimum` from a header (a string or an int); ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{what} must be >= {minimum}, got {number}")
    return number


def read_token_file(path: str | os.PathLike[str]) -> tuple[dict[str, str], np.ndarray]:
    """(metadata, tensor) of a token file whose format, version, single tensor and content digest check out;
    TokenFileError naming the file otherwise. The header's values are the caller's to interpret."""
    name = str(path)
    if not Path(path).is_file():
        raise TokenFileError(f"{name}: file not found")
    try:
        with safe_open(name, framework="numpy") as f:
            meta = dict(f.metadata() or {})
            keys = list(f.keys())
            if meta.get("format") != TOKEN_FORMAT:
                raise TokenFileError(f"{name}: not a vidtok token file (format {meta.get('format')!r})")
            if meta.get("format_version") != TOKEN_FORMAT_VERSION:
                raise TokenFileError(
                    f"{name}: token format version {meta.get('format_version')!r}, this vidtok reads "
                    f"{TOKEN_FORMAT_VERSION!r} (encode the video again with `vidtok encode`)"
                )
            kind = meta.get("kind")
            if kind not in TOKEN_KINDS or keys != [kind]:
                raise TokenFileError(f"{name}: expected one tensor 'indices' or 'latents', found {keys}")
            array = f.get_tensor(kind)
    except (SafetensorError, OSError) as err:
        raise TokenFileError(f"{name}: unreadable token file ({' '.join(str(err).split())})") from None
    if token_content_sha256(meta, array) != meta.get("content_sha256"):
        raise TokenFileError(f"{name}: header or tensor bytes do not match their recorded sha256 (file was modified)")
    return meta, array


# ------------------------------------------------------------------------------------------------ JSON records


def is_number(value: object) -> bool:
    """An int or float that is not a bool (JSON true / false parse as bools, which Python counts as ints)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def load_json(path: str | os.PathLike[str], error: type[FormatError] = FormatError) -> Any:
    """The parsed content of a JSON file; `error` naming the file otherwise (missing, unreadable, not UTF-8, not
    JSON), in one line."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{name}: file not found") from None
    except UnicodeDecodeError:
        raise error(f"{name}: not UTF-8 text (a binary or truncated file?)") from None
    except OSError as err:
        raise error(f"{name}: unreadable ({err.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise error(f"{name}: not valid JSON ({err.msg} at line {err.lineno})") from None


def _require(ok: bool, error: type[FormatError], name: str, problem: str) -> None:
    if not ok:
        raise error(f"{name}: {problem}")


def validate_metrics_record(record: Any, name: str) -> dict[str, Any]:
    """`record` (a parsed metrics.json) when its format, version and the keys its readers use check out: a numeric
    summary.psnr, a `metrics` object whose measured entries hold a numeric value and a protocol, the other sections
    objects; MetricsFileError naming `name` and the first missing or bad key otherwise."""
    err = MetricsFileError
    _require(isinstance(record, dict), err, name, f"expected a JSON object, got {type(record).__name__}")
    fmt = record.get("format")
    _require(fmt == METRICS_FORMAT, err, name, f"not a vidtok metrics file (format {fmt!r})")
    version = record.get("version")
    _require(
        version == METRICS_FORMAT_VERSION,
        err,
        name,
        f"metrics format version {version!r}, this vidtok reads {METRICS_FORMAT_VERSION!r} (evaluate the checkpoint "
        "again with `vidtok evaluate`)",
    )
    summary, metrics = record.get("summary"), record.get("metrics")
    psnr_ok = isinstance(summary, dict) and is_number(summary.get("psnr"))
    _require(psnr_ok, err, name, "summary.psnr missing or not a number")
    _require(isinstance(metrics, dict), err, name, "'metrics' missing or not an object")
    for metric, entry in metrics.items():
        _require(isinstance(entry, dict), err, name, f"metrics.{metric} is not an object")
        if entry.get("available") is False:  # not measured: {available: false, reason}
            continue
        _require(is_number(entry.get("value")), err, name, f"metrics.{metric}.value missing or not a number")
        _require(isinstance(entry.get("protocol"), dict), err, name, f"metrics.{metric}.protocol missing")
    for key in METRICS_SECTIONS:
        _require(isinstance(record.get(key, {}), dict), err, name, f"'{key}' is not an object")
    return record


def read_metrics_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metrics record in `path`, validated (validate_metrics_record); MetricsFileError naming the file."""
    return validate_metrics_record(load_json(path, MetricsFileError), str(path))


def validate_audit_record(record: Any, name: str) -> dict[str, Any]:
    """`record` (a parsed audit.json) when `passed` is true / false, `checks` a list of checks each with a name and
    a status of AUDIT_STATUSES, and `tolerance` an object where present; AuditFileError naming `name` otherwise."""
    err = AuditFileError
    _require(isinstance(record, dict), err, name, f"expected a JSON object, got {type(record).__name__}")
    _require(isinstance(record.get("passed"), bool), err, name, "'passed' missing or not true/false")
    checks = record.get("checks")
    _require(isinstance(checks, list), err, name, "'checks' missing or not a list")
    statuses = f"{', '.join(AUDIT_STATUSES[:-1])} or {AUDIT_STATUSES[-1]}"
    for i, check in enumerate(checks):
        _require(isinstance(check, dict) and isinstance(check.get("name"), str), err, name, f"checks[{i}] has no name")
        status = check.get("status")
        _require(status in AUDIT_STATUSES, err, name, f"checks[{i}].status must be {statuses}, got {status!r}")
    _require(isinstance(record.get("tolerance", {}), dict | type(None)), err, name, "'tolerance' is not an object")
    return record


def read_audit_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The audit record in `path`, validated (validate_audit_record); AuditFileError naming the file."""
    return validate_audit_record(load_json(path, AuditFileError), str(path))


# ------------------------------------------------------------------------------------------------ command line


def check_file(path: str) -> dict[str, Any]:
    """A token file's header and tensor shape, or a metrics or audit record, read and checked by its format (told
    apart by the name: *.tokens, else by the record's keys); FormatError naming the file otherwise."""
    if path.endswith(".tokens"):
        meta, array = read_token_file(path)
        return {**meta, "tensor": {"dtype": array.dtype.name, "shape": list(array.shape)}}
    record = load_json(path)
    if isinstance(record, dict) and "format" not in record and "checks" in record:
        return validate_audit_record(record, path)
    return validate_metrics_record(record, path)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m vidtok.formats FILE.tokens|metrics.json|audit.json ...", file=sys.stderr)
        return 2
    failed = 0
    for path in argv:
        try:
            content = check_file(path)
        except FormatError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        if path.endswith(".tokens"):
            print(json.dumps(content, indent=2))
        elif "checks" in content:
            verdict = "passed" if content["passed"] else "failed"
            print(f"{path}: audit record, {verdict}, {len(content['checks'])} checks")
        else:
            print(f"{path}: {content['format']} version {content['version']}, psnr {content['summary']['psnr']}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
