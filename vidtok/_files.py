"""The infrastructure helpers, one of each: atomic writes, sha256, one-line errors, device choice, the DVC command.

    python -c "from vidtok._files import sha256_file; print(sha256_file('params.yaml'))"

Atomic writes. Every file the platform writes (run records, checkpoints, manifests, clip indexes, metrics,
trials tables, token files, videos through vidtok.data.video) appears under its final name only when complete:
the bytes go to a temporary name in the same folder (".<name>.<random>.<pid>-<host>.part"), are fsync'd, renamed
over the target, and the folder is fsync'd so the rename survives a power cut. An exception leaves the old file
(or nothing) and removes the temporary one. A kill cannot remove it, so the name is one every reader skips: hidden
(a leading dot: the manifest's folder scan, glob and shell patterns skip it), ending in .part (.dvcignore, and no
pattern for a real extension matches it), and tagged with the writing process, so the next atomic write into the
same folder removes the ones whose process is gone (never a live writer's); `remove_stale_parts` sweeps a tree.
Folders (checkpoints) are written the same way and swapped in with one atomic exchange (Linux renameat2), so a
reader never finds the checkpoint folder missing. fsspec URLs (s3://, gs://, memory://) are written with one
upload: object stores publish an object only once it is complete.

Torch-free: the dashboard and the data commands use this module; `resolve_device` imports torch when called.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import hashlib
import io
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_write",
    "dvc_command",
    "md5_file",
    "one_line",
    "remove_stale_parts",
    "resolve_device",
    "sha256_file",
    "sha256_and_size",
    "tool_env",
    "write_json",
    "write_table",
]

PathLike = str | os.PathLike[str]
# Object stores make an uploaded object visible only once the upload is complete, so a direct put is atomic there.
_ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "memory"})
_CHUNK = 1 << 20


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; published files get the usual 0666 & ~umask, like open() would give them.
_FILE_MODE = 0o666 & ~_umask()


def _fsync_dir(folder: str | os.PathLike[str]) -> None:
    with contextlib.suppress(OSError):  # some file systems (and Windows) cannot open a folder for fsync
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# ------------------------------------------------------------------------------------------------ writing

# Which machine wrote a temporary file: a process id only means something on the host that ran it (a shared
# network folder can hold parts from several).
_HOST_TAG = hashlib.sha1(socket.gethostname().encode(), usedforsecurity=False).hexdigest()[:6]
_PART = re.compile(r"\..+\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.part")


def _part_suffix() -> str:
    return f".{os.getpid()}-{_HOST_TAG}.part"


def _is_stale_part(name: str) -> bool:
    """A temporary file or folder this machine's atomic writes named, left by a process that no longer runs."""
    match = _PART.fullmatch(name)
    if match is None or match["host"] != _HOST_TAG:
        return False
    pid = int(match["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: it exists, under another user
        return False
    return False


def remove_stale_parts(folder: PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary files and folders that killed atomic writes left in `folder` (and below it with
    `recursive`); returns what was removed. Parts of live writers, and of other machines, are kept."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:  # missing or unreadable: nothing to clean
        return removed
    for entry in entries:
        path = Path(entry.path)
        if _is_stale_part(entry.name):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path)
        elif recursive and entry.is_dir(follow_symlinks=False):
            removed += remove_stale_parts(path, recursive=True)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside the local file `path` for a writer that wants a file name (parquet, numpy,
    safetensors, a video muxer that streams); on a clean exit the file is fsync'd and renamed over `path`, on an
    exception removed. Temporary files a killed writer left in the same folder are removed first."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_part_suffix(), dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    _fsync_dir(target.parent)


def atomic_write(path: PathLike, content: bytes | str) -> str:
    """Write `content` (str as UTF-8) at `path`, a local path or an fsspec URL, atomically. Returns the path."""
    data = content.encode("utf-8") if isinstance(content, str) else bytes(content)
    name = os.fspath(path)
    fs, fspath = fsspec.core.url_to_fs(name)
    if isinstance(fs, LocalFileSystem):
        with atomic_path(fspath) as tmp:
            tmp.write_bytes(data)
        return name
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    parent = fspath.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if _ATOMIC_PUT_PROTOCOLS.intersection(protocols):
        fs.pipe_file(fspath, data)
    else:  # e.g. sftp: upload beside the target, then rename
        part = f"{fspath}.{uuid.uuid4().hex[:8]}.part"
        fs.pipe_file(part, data)
        fs.mv(part, fspath)
    return name


def write_json(path: PathLike, obj: Any, *, sort_keys: bool = True) -> str:
    """`obj` as indented JSON (NaN and infinity refused: they are not JSON) with a final newline, atomically."""
    return atomic_write(path, json.dumps(obj, indent=2, sort_keys=sort_keys, allow_nan=False) + "\n")


def write_table(df: pd.DataFrame, path: PathLike) -> str:
    """A table atomically as parquet, or as CSV when `path` ends in .csv (local path or fsspec URL)."""
    buffer = io.BytesIO()
    if os.fspath(path).lower().endswith(".csv"):
        df.to_csv(buffer, index=False)
    else:
        df.to_parquet(buffer, index=False, engine="pyarrow")
    return atomic_write(path, buffer.getvalue())


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:  # glibc < 2.28
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the file system or kernel cannot exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def atomic_folder(path: PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on a clean exit its files are fsync'd and it replaces
    `path` in one atomic step (an existing folder is exchanged with it, then deleted), on an exception removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(target.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=_part_suffix(), dir=target.parent))
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as f:
                    os.fsync(f.fileno())
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if target.exists() and _exchange(tmp, target):
            pass  # tmp now holds the old folder: removed below
        elif target.exists():  # no exchange here: two renames, with a moment between them
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------ hashing


def sha256_and_size(path: PathLike) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of a local file or fsspec URL, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with fsspec.open(os.fspath(path), "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def sha256_file(path: PathLike) -> str:
    """sha256 hex digest of a local file or fsspec URL."""
    return sha256_and_size(path)[0]


def md5_file(path: PathLike) -> str:
    """md5 hex digest of a local file: what DVC records for a file (not a security hash)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


# ------------------------------------------------------------------------------------------------ errors, devices


def one_line(err: BaseException, *, with_type: bool = False, limit: int = 500) -> str:
    """The first line of an error message (the whole message of the platform's own errors), whitespace collapsed;
    `with_type` prefixes the exception's class name (for records where the kind matters: failed runs, trials)."""
    lines = str(err).strip().splitlines()
    text = " ".join(lines[0].split()) if lines else ""
    if with_type:
        text = f"{type(err).__name__}: {text}".rstrip(": ")
    return (text or type(err).__name__)[:limit]


def resolve_device(device: str = "auto") -> str:
    """ "auto" -> "cuda" when a CUDA device exists, else "cpu"; "cuda", "cuda:N", "gpu" are checked to exist;
    "cpu" passes. ValueError naming the fix otherwise. Returns a torch device string."""
    import torch  # heavy: only the commands that compute call this

    name = {"gpu": "cuda"}.get(device, device)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r}: no CUDA device is available on this machine (use cpu or auto)")
        index = name.partition(":")[2]
        if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
        return name
    raise ValueError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")


# ------------------------------------------------------------------------------------------------ subprocesses


def tool_env() -> dict[str, str]:
    """os.environ with DVC analytics off and this interpreter's bin folder first on PATH.

    `make run` calls `.venv/bin/vidtok` without activating the virtual environment; the stages DVC starts run
    `vidtok ...` through the shell, which finds it only when the environment's bin folder is on PATH.
    """
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        path = os.pathsep.join([bin_dir, path]) if path else bin_dir
    return {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": path}


def dvc_command() -> list[str]:
    """How to run DVC: the `dvc` beside this interpreter (the project's venv), else `python -m dvc`."""
    exe = Path(sys.executable).with_name("dvc")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "dvc"]
