"""metrics.csv and val.csv reach the disk (fsync) before every checkpoint, so a checkpoint never refers to rows that a
power cut would lose.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/train/test_callbacks.py -q
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from vidtok.runs import METRICS_NAME, VAL_NAME
from vidtok.train.callbacks import Recorder, RecorderHooks, TrainHooks
from vidtok.train.config import TrainConfig


def test_csv_rows_are_fsynced_before_each_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[tuple[str, int]] = []  # (file name, its size when fsync'd)
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        real_fsync(fd)
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        synced.append((name, os.fstat(fd).st_size))

    monkeypatch.setattr(os, "fsync", recording_fsync)
    checkpoints: list[tuple[int, dict[str, int]]] = []

    def save(module: object, step: int, final: bool) -> Path:
        # What had reached the disk when the checkpoint was taken, against what the files hold.
        on_disk = dict(synced)  # the last fsync'd size of each file
        written = {name: (tmp_path / name).stat().st_size for name in (METRICS_NAME, VAL_NAME)}
        checkpoints.append((step, {name: written[name] - on_disk.get(name, -1) for name in written}))
        return tmp_path / f"step_{step}"

    recorder = Recorder(
        tmp_path,
        TrainConfig(steps=6, batch_size=1, lr=1e-4, log_every=1, val_every=2, checkpoint_every=2, keep_checkpoints=0),
        RecorderHooks(
            save=save,
            validate=lambda module: {"val_psnr": 20.0, "val_ssim": 0.5, "trivial_psnr": 10.0, "trivial_ssim": 0.1},
            on_checkpoint=lambda path, step, final: None,
            caller=TrainHooks(progress=False),
        ),
        start_step=0,
        columns=["step", "loss_g"],
    )
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    module = SimpleNamespace(completed_steps=0, last_logs={}, lr=1e-4, lr_warmup=0, last_checkpoint=None)
    recorder.on_train_start(trainer, module)
    for step in range(1, 6):
        module.completed_steps, module.last_logs = step, {"loss_g": 1.0 / step}
        recorder.on_train_batch_end(trainer, module)
    recorder.close()
    assert [step for step, _ in checkpoints] == [2, 4]
    for step, unsynced in checkpoints:
        assert unsynced == {METRICS_NAME: 0, VAL_NAME: 0}, (step, unsynced)  # every byte written was fsync'd
    rows = (tmp_path / METRICS_NAME).read_text().splitlines()
    assert len(rows) == 6 and rows[-1].startswith("5,")  # header + steps 1..5, the last fsync'd at close
    assert synced[-2:] == [(METRICS_NAME, (tmp_path / METRICS_NAME).stat().st_size),
                           (VAL_NAME, (tmp_path / VAL_NAME).stat().st_size)]  # fmt: skip
