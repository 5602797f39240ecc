"""params.yaml: named profiles, top-level overrides and `--set` overrides, merged into config sections.

    python -m vidtok.params --profile paper     # print the merged sections of params.yaml as YAML

Format (sections `data`, `model`, `train`, `loss`; their keys are the typed config fields):

    profile: cpu                 # the profile used when none is asked for
    profiles:
      cpu:   {data: ..., model: {preset: ...}, train: {..., stage1: {...}, stage2: {...}}, loss: ...}
      paper: {...}
    data: {}                     # top-level sections override the profile key by key
    train: {lr: null}            #   null: the profile's value (`dvc exp run -S train.lr=3e-4` writes here)

Precedence, lowest first: the dataclass defaults, the profile, the top-level sections, `--set section.key=value`.
Torch-free, so the data commands and the dashboard can read parameters without importing the model.

Every config section's dataclass (DataConfig, ModelConfig / ModelSpec, TrainConfig, LossConfig) is built from its
mapping by `from_mapping` (an unknown key is an error listing the known ones) and checks its fields with the small
validators below (`check_int`, `check_number`, `check_bool`, `check_choice`), so every section words its errors
the same way: `section.key must be ..., got VALUE`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import yaml

SECTIONS = ("data", "model", "train", "loss")

Config = TypeVar("Config")

# ------------------------------------------------------------------------------------------------ config helpers


def check_keys(values: Mapping[str, Any], known: Iterable[str], what: str) -> None:
    """ValueError "unknown WHAT a, b; known: ..." when `values` holds a key outside `known`."""
    known = sorted(known)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {', '.join(map(str, unknown))}; known: {', '.join(known)}")


def from_mapping(
    cls: Callable[..., Config], values: Mapping[str, Any], what: str, convert: Callable[[Any], Any] | None = None
) -> Config:
    """The dataclass `cls` from a params mapping, strictly: an unknown key is a ValueError naming it and listing
    the known fields (`what` names the keys, e.g. "train parameter(s)"); `convert` maps each value first (YAML lists
    to tuples, say). The dataclass's own __post_init__ then checks the values."""
    check_keys(values, (f.name for f in dataclasses.fields(cls)), what)  # type: ignore[arg-type]
    return cls(**{k: convert(v) if convert else v for k, v in values.items()})


def check_int(name: str, value: Any, low: int) -> None:
    """`name` (e.g. "train.steps") must be an integer >= low (a bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def check_number(name: str, value: Any, low: float = 0.0) -> None:
    """`name` must be a number (int or float, not bool) >= low; nan fails too."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= low:
        raise ValueError(f"{name} must be a number >= {low:g}, got {value!r}")


def check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """`name` must be one of `choices`: "x.y must be 'a', 'b' or 'c', got VALUE"."""
    if value not in choices:
        quoted = [repr(c) for c in choices]
        listed = quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"
        raise ValueError(f"{name} must be {listed}, got {value!r}")


# ------------------------------------------------------------------------------------------------ params.yaml


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = dict(value) if isinstance(value, Mapping) else value
    return base


def _sections(where: str, mapping: Any) -> dict[str, Any]:
    if not isinstance(mapping, Mapping):
        raise ValueError(f"{where} must be a mapping of sections {', '.join(SECTIONS)}")
    out = {}
    for section, values in mapping.items():
        if section not in SECTIONS:
            raise ValueError(f"{where}: unknown section {section!r}; sections are {', '.join(SECTIONS)}")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ValueError(f"{where}.{section} must be a mapping of config fields")
        out[section] = dict(values)
    return out


def _unset_removed(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level sections without their null entries: `lr: null` there means "the profile's value". The keys
    are listed so that `dvc exp run -S train.lr=...` can set them (DVC only overrides keys that exist)."""
    return {k: _unset_removed(v) if isinstance(v, Mapping) else v for k, v in mapping.items() if v is not None}


def _yaml_loader() -> type:
    """PyYAML's SafeLoader reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`); DVC's YAML 1.2 reader and every
    user mean the number. This loader also resolves exponent floats without a dot."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def yaml_load(text: Any) -> Any:

    return yaml.load(text, Loader=_yaml_loader())  # noqa: S506 - a SafeLoader subclass


def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.stage2.steps=50' -> (['train', 'stage2', 'steps'], 50); the value is parsed as YAML."""

    key, sep, raw = item.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) < 2 or not all(parts):
        raise ValueError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.lr=1e-3")
    if parts[0] not in SECTIONS:
        raise ValueError(f"--set {item!r}: the key must start with one of {', '.join(s + '.' for s in SECTIONS)}")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ValueError(f"--set {item!r}: the value is not valid YAML ({err.__class__.__name__})") from None
    return parts, value


def read_params_file(path: str | os.PathLike[str]) -> dict[str, Any]:

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: params file not found")
    with open(path, encoding="utf-8") as f:
        try:
            doc = yaml_load(f) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(doc, Mapping):
        raise ValueError(f"{path}: expected a mapping with sections {', '.join(SECTIONS)}")
    return dict(doc)


def resolve_sections(
    path: str | os.PathLike[str] | None, profile: str | None = None, overrides: Sequence[str] = ()
) -> dict[str, dict[str, Any]]:
    """The merged `data`, `model`, `train`, `loss` sections (plain dicts, not yet validated configs).

    A missing file (None) gives empty sections; an unknown section or profile is a ValueError naming it."""
    doc: dict[str, Any] = {} if path is None else read_params_file(path)
    source = "params" if path is None else str(path)
    profiles = doc.get("profiles") or {}
    if not isinstance(profiles, Mapping):
        raise ValueError(f"{source}: profiles must map profile names to sections")
    name = profile if profile is not None else doc.get("profile")
    merged: dict[str, Any] = {s: {} for s in SECTIONS}
    if name is not None:
        if name not in profiles:
            raise ValueError(f"{source}: no profile {name!r}; profiles: {', '.join(map(str, profiles)) or 'none'}")
        _merge(merged, _sections(f"{source}: profiles.{name}", profiles[name]))
    _merge(merged, _unset_removed(_sections(source, {s: doc[s] for s in SECTIONS if s in doc})))
    for item in overrides:
        parts, value = parse_override(item)
        node = merged
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return merged


def active_profile(path: str | os.PathLike[str] | None, profile: str | None = None) -> str | None:
    if profile is not None or path is None or not os.path.isfile(path):
        return profile
    return read_params_file(path).get("profile")


def main(argv: list[str]) -> int:

    parser = argparse.ArgumentParser(prog="python -m vidtok.params", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="params.yaml")
    parser.add_argument("--profile")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args(argv)
    try:
        sections = resolve_sections(args.config, args.profile, args.set)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(sections, sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
