"""On-device side of ecgstream: the int8 LiteRT embedding model and its card.

``edge`` never imports TensorFlow. :class:`EmbeddingModel` loads
``model.tflite`` with ``ai_edge_litert``, checks it against ``model.json``
(hash, shapes, quantization, DSP settings) and embeds raw beat windows.
"""

from .card import CARD_FORMAT_VERSION, ModelCard, ModelError, sha256_file
from .preprocess import NORMALISATION, check_windows, normalise_beats
from .runtime import EmbeddingModel, LiteRTEmbedder, default_card_path, default_model_path

__all__ = [
    "CARD_FORMAT_VERSION",
    "EmbeddingModel",
    "LiteRTEmbedder",
    "ModelCard",
    "ModelError",
    "NORMALISATION",
    "check_windows",
    "default_card_path",
    "default_model_path",
    "normalise_beats",
    "sha256_file",
]
