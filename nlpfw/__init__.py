"""nlpfw: a plugin-based training framework for NLP, built for Chinese text."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
