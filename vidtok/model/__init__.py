"""The tokenizer: video tensor <-> latents / tokens. Imports nothing above it.

    python -c "from vidtok import VidTok; print(VidTok.from_preset('tiny_fsq_causal_444'))"

config.py (ModelConfig, the presets, the params.yaml `model:` section; torch-free), vidtok.py (the whole
autoencoder, read top to bottom, with its own save/load), quantizers.py (KL, FSQ, LFQ, VQ), streaming.py (causal
chunked inference, tiling), interop.py (upstream .ckpt and diffusers in/out).
"""
