"""nlpfw-globalpointer: the Efficient GlobalPointer span decoder as an nlpfw plugin."""

from __future__ import annotations

from nlpfw_globalpointer.decoder import (
    GlobalPointerConfig,
    GlobalPointerDecoder,
    multilabel_categorical_crossentropy,
    rotary,
)

__version__ = "0.1.0"
__all__ = ["GlobalPointerConfig", "GlobalPointerDecoder", "multilabel_categorical_crossentropy", "rotary"]
