"""The tokenizer: video tensor <-> latents / tokens. Imports nothing above it.

    python -c "from vidtok import VidTok; print(VidTok.from_preset('tiny_fsq_causal_444'))"

config.py (ModelConfig, the presets, the params.yaml `model:` section; torch-free), vidtok.py (the network, read
top to bottom, with its own save/load), kernels.py (which kernels and memory layouts run its arithmetic),
quantizers.py (the regularizers: KL, FSQ, LFQ, VQ, none), trivial.py (the trivial codec and the shortcut around it),
streaming.py (causal chunked inference and its stream state, tiling), interop.py (upstream .ckpt and diffusers in/out).
"""
