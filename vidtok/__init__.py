"""VidTok video tokenizers: `from vidtok import VidTok`.

Attributes load lazily, so light modules (vidtok.runs, vidtok.studies.results, vidtok.data.manifest) can be imported
by the dashboard and the data commands without importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Encoded", "ModelConfig", "VidTok", "set_streaming"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from vidtok.model.config import ModelConfig
    from vidtok.model.streaming import set_streaming
    from vidtok.model.vidtok import Encoded, VidTok


def __getattr__(name: str) -> Any:
    if name == "set_streaming":
        from vidtok.model import streaming

        return streaming.set_streaming
    if name in __all__:
        from vidtok.model import vidtok as model

        return getattr(model, name)
    raise AttributeError(f"module 'vidtok' has no attribute {name!r}")
