"""Clips -> checkpoint: two-stage VidTok training.

    vidtok stage stage1 --run-dir runs/stage1

config.py (TrainConfig, params.yaml loading, the checks before training), losses.py (the VidTok loss and its
discriminators), module.py (the LightningModule: one generator and one discriminator step per iteration),
state.py (the resumable training state on disk), callbacks.py (metrics, validation, checkpoints while training),
run.py (`train`: one stage into a run folder).
"""
