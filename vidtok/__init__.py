"""VidTok video tokenizers: `from vidtok import VidTok`."""

from vidtok.model import Encoded, ModelConfig, VidTok, set_streaming

__all__ = ["Encoded", "ModelConfig", "VidTok", "set_streaming"]
__version__ = "0.1.0"
