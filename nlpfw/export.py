"""Export a model folder to ONNX: encoder and decoder in one graph, texts in, tag ids out.

The graph takes `input_ids` [batch, chars] int64 (the encoder's `char_ids`, zero-padded) and
`mask` [batch, chars] bool, and returns `tags` [batch, chars] int64 (0 outside the mask); batch
and chars are dynamic. Beside `OUT` a sidecar `OUT.json` holds the labels, the entity types and
the window/stride, so tags can be read back into spans without nlpfw.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

import nlpfw
from nlpfw import io
from nlpfw.corpus import window_settings
from nlpfw.errors import NlpfwError
from nlpfw.model import LoadedModel
from nlpfw.modelcheck import load_checked
from nlpfw.registry import Registry

REQUIRED = ("onnx", "onnxscript", "onnxruntime")


class Tagger(nn.Module):
    """The exported graph: (input_ids, mask) to tag ids."""

    def __init__(self, loaded: LoadedModel):
        super().__init__()
        self.encoder = loaded.model.encoder
        self.decoder = loaded.model.decoder

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.decoder.decode(self.encoder(input_ids, mask), mask)


def _require_onnx() -> None:
    for name in REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            raise NlpfwError(f"ONNX export needs {', '.join(REQUIRED)}: pip install 'nlpfw[onnx]'") from None


def export_onnx(model_dir: Path, out: Path, registry: Registry) -> Path:
    """Write the model folder `model_dir` as the ONNX graph `out` (atomically) and its sidecar
    `OUT.json` (labels, entity types, window and stride); return `out`. Before the graph is
    kept, onnxruntime runs it on a check batch and must give the model's own tags."""
    loaded = load_checked(model_dir, registry)  # raises NlpfwError for a missing or damaged model folder
    if loaded.model.decoder.target != "tags":
        raise NlpfwError(
            f"{model_dir}: ONNX export covers tag decoders; {loaded.recipe.decoder.type} predicts "
            f"{loaded.model.decoder.target}"
        )
    _require_onnx()
    tagger = Tagger(loaded).eval().requires_grad_(False)  # no autograd: torch.scan exports only then
    max_chars = loaded.model.encoder.max_chars
    batch = torch.export.Dim("batch")
    chars = torch.export.Dim("chars", max=max_chars) if max_chars else torch.export.Dim("chars")
    sample = _sample(loaded, [5, 3])
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registration.setLevel(logging.ERROR)  # "torchvision is not installed", which nothing here needs
        try:
            program = torch.onnx.export(
                tagger,
                (sample["input_ids"], sample["mask"]),
                input_names=["input_ids", "mask"],
                output_names=["tags"],
                dynamic_shapes={"input_ids": {0: batch, 1: chars}, "mask": {0: batch, 1: chars}},
                dynamo=True,
                verbose=False,
            )
        except Exception as error:
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise NlpfwError(f"{model_dir}: the model could not be exported to ONNX: {first}") from error
        finally:
            registration.setLevel(level)
    assert program is not None
    out = Path(out)
    io.atomic_write(out, lambda tmp: _save_checked(program, tmp, tagger, loaded))
    window, stride = window_settings(loaded.recipe.trainer.window, loaded.recipe.trainer.stride, max_chars)
    io.write_json(out.with_name(out.name + ".json"), {
        "nlpfw_version": nlpfw.__version__,
        "inputs": {"input_ids": "[batch, chars] int64", "mask": "[batch, chars] bool"},
        "outputs": {"tags": "[batch, chars] int64, 0 outside the mask"},
        "labels": loaded.task.labels,
        "entity_types": loaded.task.entity_types,
        "scoring": getattr(loaded.task.config, "scoring", "strict"),
        "window": window,
        "stride": stride,
        "max_chars": max_chars,
        "task": loaded.recipe.task.type,
        "encoder": loaded.recipe.encoder.type,
        "decoder": loaded.recipe.decoder.type,
    })  # fmt: skip
    return out


def _sample(loaded: LoadedModel, lengths: list[int]) -> dict[str, torch.Tensor]:
    """A padded batch of rows of the given lengths, through the task's own collate."""
    text = "北京是中国的首都，CSOL 比赛第1名。" * 4
    limit = loaded.model.encoder.max_chars or len(text)
    return loaded.task.collate([{"input_ids": loaded.model.encoder.char_ids(text[: min(n, limit)])} for n in lengths])


def _save_checked(program: Any, path: Path, tagger: Tagger, loaded: LoadedModel) -> None:
    """Save the graph (weights inside, one file) and check that onnxruntime runs it on a batch
    of another size than the export's, with the model's own tags."""
    import onnxruntime

    program.save(str(path), external_data=False)
    batch = _sample(loaded, [7, 2, 6])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (tags,) = session.run(None, {"input_ids": batch["input_ids"].numpy(), "mask": batch["mask"].numpy()})
    with torch.no_grad():
        expected = tagger(batch["input_ids"], batch["mask"]).numpy()
    if tags.shape != expected.shape or not (tags == expected).all():
        raise NlpfwError("the exported ONNX graph gives other tags than the model on a check batch")


class OnnxTagger:
    """An exported graph run by onnxruntime, in the place of a `TaggingModel`: with the model
    folder's tokenizer and task, `nlpfw.model.predict_spans(OnnxTagger(path), ...)` batches,
    windows and merges exactly as the PyTorch model does."""

    decoder = SimpleNamespace(target="tags")  # what `infer` reads of a decoder: the graph gives tag ids

    def __init__(self, path: Path, threads: int | None = None):
        _require_onnx()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxTagger:
        return self

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[None, torch.Tensor]:
        (tags,) = self.session.run(
            None, {"input_ids": batch["input_ids"].cpu().numpy(), "mask": batch["mask"].cpu().numpy()}
        )
        return None, torch.from_numpy(tags)
