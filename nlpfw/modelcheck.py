"""The one check of a model folder before use (predict, evaluate, export, `nlpfw.load`):
every file there, readable and consistent, or one message naming what is missing or damaged."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from nlpfw.errors import NlpfwError

WEIGHTS = "model.safetensors"


class ModelFolderError(NlpfwError):
    """A model folder is missing a file, or a file in it is damaged."""


def model_folder(directory: Path) -> Path:
    """The model folder of a run folder or of itself; the existing message when neither."""
    directory = Path(directory)
    if (directory / "model").is_dir() and not (directory / WEIGHTS).is_file():
        return directory / "model"
    if not (directory / WEIGHTS).is_file():
        raise ModelFolderError(f"{directory}: not a run folder or a model folder (no {WEIGHTS} in it or in model/)")
    return directory


def _damaged(folder: Path, what: str) -> ModelFolderError:
    return ModelFolderError(f"model folder {folder} is damaged: {what}; copy the folder again, or train the model again")


def validate_model_dir(directory: Path) -> Path:
    """The model folder of `directory`, after checking every file the model is loaded from."""
    folder = model_folder(directory)
    for name in (WEIGHTS, "labels.json", "recipe.toml"):
        if not (folder / name).is_file():
            raise _damaged(folder, f"{name} is missing")
    if not (folder / "encoder").is_dir() or not any((folder / "encoder").iterdir()):
        raise _damaged(folder, "encoder/ is missing or empty")
    try:
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise _damaged(folder, f"labels.json is not valid JSON ({type(error).__name__}: {str(error).splitlines()[0]})") from None
    def names(key: str) -> bool:
        return isinstance(labels.get(key), list) and all(isinstance(x, str) for x in labels[key])

    # labels.json: the task's labels, the decoder's target and its label names (or, in model
    # folders from before the task contract, NER's entity types and tag names)
    current = names("labels") and isinstance(labels.get("target"), str) and names("target_labels")
    if not (isinstance(labels, dict) and (current or (names("entity_types") and names("labels")))):
        raise _damaged(folder, 'labels.json must hold "labels" and "target_labels", lists of names, and "target"')
    try:
        from safetensors import safe_open

        with safe_open(str(folder / WEIGHTS), framework="pt", device="cpu") as weights:
            for key in weights.keys():
                weights.get_slice(key)
    except Exception as error:
        raise _damaged(folder, f"{WEIGHTS} is truncated or not a safetensors file ({_first(error)})") from None
    return folder


def _first(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def load_checked(directory: str | Path, registry: Any, device: str | torch.device = "cpu") -> Any:
    """`load_model` after `validate_model_dir`; what still fails to load (an encoder file, weights
    that do not fit the labels) is named too."""
    from nlpfw.model import load_model

    folder = validate_model_dir(Path(directory))
    try:
        return load_model(folder, registry, device)
    except NlpfwError:
        raise
    except RuntimeError as error:
        if "size mismatch" in str(error) or "Missing key" in str(error) or "Unexpected key" in str(error):
            raise _damaged(folder, f"{WEIGHTS} does not fit the model that recipe.toml and labels.json describe "
                                   f"({_first(error)})") from None  # fmt: skip
        raise _damaged(folder, f"the model does not load ({_first(error)})") from None
    except Exception as error:
        raise _damaged(folder, f"encoder/ does not load ({_first(error)})") from None
