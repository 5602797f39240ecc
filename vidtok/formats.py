"""The project's file formats that more than one layer reads, torch-free: the token file of `vidtok encode`.

    python -m vidtok.formats clip.tokens   # check a token file (format, version, content digest), print its header

A token file is a safetensors file holding one tensor, `indices` (int32, (1, t, h, w)) for discrete models or
`latents` (float32, (1, z, t, h, w)) otherwise, and string metadata that makes it self-contained (vidtok.tokens
writes it): the model, its config, the source file, fps, frame count, geometry, the clip length, and
`content_sha256`, a digest over every other header field and the tensor's dtype, shape and bytes. So an edited fps
or geometry is caught like an edited token, and the library (vidtok.tokens) and the dashboard read the same rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

__all__ = [
    "TOKEN_FORMAT",
    "TOKEN_FORMAT_VERSION",
    "TOKEN_KINDS",
    "TokenFileError",
    "parse_count",
    "parse_fraction",
    "read_token_file",
    "token_content_sha256",
]

TOKEN_FORMAT = "vidtok-tokens"
# Version 2: `content_sha256` covers the header as well as the tensor (version 1 hashed the tensor alone, so an
# edited fps or geometry decoded silently wrong); version 1 files are refused with the command that remakes them.
TOKEN_FORMAT_VERSION = "2"
TOKEN_KINDS = ("indices", "latents")


class TokenFileError(ValueError):
    """A token file that cannot be used: one line naming the file and the problem."""


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


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m vidtok.formats FILE.tokens", file=sys.stderr)
        return 2
    try:
        meta, array = read_token_file(argv[0])
    except TokenFileError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(json.dumps({**meta, "tensor": {"dtype": array.dtype.name, "shape": list(array.shape)}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
