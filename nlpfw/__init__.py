"""nlpfw: a plugin-based training framework for NLP, built for Chinese text.

    import nlpfw
    model = nlpfw.load("runs/quickstart-20261125-101500")
    model.predict(["我在北京的CSOL比赛里拿了第1名"])
    # [[{"type": "address", "text": "北京", "start": 2, "end": 4}, ...]]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = ["__version__", "load"]

if TYPE_CHECKING:
    from nlpfw.model import LoadedModel


def load(path: str | Path, device: str = "cpu", plugins: tuple[str, ...] = ()) -> LoadedModel:
    """Load a run folder (or its `model/` folder) for prediction and evaluation.

    Needs neither the training data nor the network. Components come from the built-in
    plugins, installed plugins (entry points in group `nlpfw`) and the `plugins` modules."""
    from nlpfw.modelcheck import load_checked
    from nlpfw.plugins import build_registry, get_plugin_manager

    return load_checked(path, build_registry(get_plugin_manager(modules=plugins)), device)
