"""Export a model folder to ONNX: encoder and decoder in one graph, ids in, the decoder's output out.

The graph takes `input_ids` [batch, chars] int64 (the encoder's `char_ids`, zero-padded; [batch,
chars, k] for an encoder that gives a row of ids per character, the sidecar says which) and
`mask` [batch, chars] bool, and returns what the decoder's `decode` returns, named by its
`output_name`: `tags` [batch, chars] int64 (0 outside the mask) for a tag decoder, `scores`
[batch, classes] float for a classifier; batch and chars are dynamic. Beside `OUT` a sidecar
`OUT.json` holds the task, the decoder's target and its label names, and the window/stride, so
outputs can be read back without nlpfw. Decoders whose output size depends on the data (span
decoders: `Decoder.exportable` false) are refused with a message.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
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


class Exported(nn.Module):
    """The exported graph: (input_ids, mask) to the decoder's output."""

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


def export_onnx(
    model_dir: Path, out: Path, registry: Registry, quantize: str | None = None, check_texts: list[str] | None = None,
    max_tag_change: float = 0.02,
) -> Path:  # fmt: skip
    """Write the model folder `model_dir` as the ONNX graph `out` (atomically) and its sidecar
    `OUT.json` (the task, the target's label names, window and stride); return `out`. Before the
    graph is kept, onnxruntime runs it on a check batch and must give the model's own outputs.

    With `quantize="int8"` the float graph is quantized (`nlpfw.quantize`) and `out` is written
    only if the int8 tags differ from the model's on at most `max_tag_change` of the characters
    of `check_texts` (default `nlpfw.quantize.CHECK_TEXTS`)."""
    loaded = load_checked(model_dir, registry)  # raises NlpfwError for a missing or damaged model folder
    decoder = loaded.model.decoder
    if not decoder.exportable:
        raise NlpfwError(
            f"{model_dir}: {loaded.recipe.decoder.type} cannot be exported to ONNX: its output "
            f"({decoder.output_name}) has a size that depends on the data"
        )
    _require_onnx()
    tagger = Exported(loaded).eval().requires_grad_(False)  # no autograd: torch.scan exports only then
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
                output_names=[decoder.output_name],
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
    _check_dynamic(program, model_dir)
    out = Path(out)
    graph = out if quantize is None else out.with_name(f".{out.name}.float32.onnx")  # quantized into `out` below
    io.atomic_write(graph, lambda tmp: _save_checked(program, tmp, tagger, loaded))
    int8_check = None
    if quantize is not None:
        from nlpfw.quantize import CHECK_TEXTS, write_int8

        try:
            int8_check = write_int8(graph, out, loaded, check_texts or list(CHECK_TEXTS), max_tag_change)
        finally:
            graph.unlink(missing_ok=True)
    window, stride = window_settings(loaded.recipe.trainer.window, loaded.recipe.trainer.stride, max_chars)
    io.write_json(out.with_name(out.name + ".json"), {
        "nlpfw_version": nlpfw.__version__,
        "inputs": {"input_ids": _ids_shape(sample["input_ids"]), "mask": "[batch, chars] bool"},
        "output": decoder.output_name,
        "target": decoder.target,
        "labels": decoder.labels,
        "task_labels": loaded.task.labels,
        "task_config": loaded.recipe.task.config.model_dump(mode="json"),
        "window": window,
        "stride": stride,
        "max_chars": max_chars,
        "task": loaded.recipe.task.type,
        "encoder": loaded.recipe.encoder.type,
        "decoder": loaded.recipe.decoder.type,
        **({"quantization": {"type": quantize, "check": int8_check}} if quantize else {}),
    })  # fmt: skip
    return out


def _check_dynamic(program: Any, model_dir: Path) -> None:
    """Refuse a graph whose batch or chars dimension came out fixed: when torch.export finds
    that the model specialises a dynamic dimension, torch.onnx retries with the dimension
    fixed to the example's size and says nothing, and such a graph refuses other lengths."""
    for value in program.model.graph.inputs:
        fixed = [f"{name} = {dim}" for name, dim in zip(("batch", "chars"), value.shape) if isinstance(dim, int)]
        if fixed:
            raise NlpfwError(
                f"{model_dir}: the exported ONNX graph's {value.name} has {', '.join(fixed)} instead of a "
                "dynamic size (the model's code specialises on the example's shape when traced)"
            )


def _ids_shape(ids: torch.Tensor) -> str:
    """The graph's `input_ids` shape in words: [batch, chars], or [batch, chars, k] for an
    encoder that gives a row of ids per character (`Encoder.char_ids`)."""
    return f"[batch, chars{''.join(f', {n}' for n in ids.shape[2:])}] int64"


def _sample(loaded: LoadedModel, lengths: list[int]) -> dict[str, torch.Tensor]:
    """A padded batch of rows of the given lengths, through the task's own collate."""
    text = "北京是中国的首都，CSOL 比赛第1名。" * 4
    limit = loaded.model.encoder.max_chars or len(text)
    return loaded.task.collate([{"input_ids": loaded.model.encoder.char_ids(text[: min(n, limit)])} for n in lengths])


def _save_checked(program: Any, path: Path, tagger: Exported, loaded: LoadedModel) -> None:
    """Save the graph (weights inside, one file) and check that onnxruntime runs it on a batch
    of another size than the export's, with the model's own outputs (tags equal; scores to
    float tolerance)."""
    import onnxruntime

    program.save(str(path), external_data=False)
    batch = _sample(loaded, [7, 2, 6])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"input_ids": batch["input_ids"].numpy(), "mask": batch["mask"].numpy()})
    with torch.no_grad():
        expected = tagger(batch["input_ids"], batch["mask"]).numpy()
    same = got.shape == expected.shape and (
        np.allclose(got, expected, rtol=1e-4, atol=1e-5) if expected.dtype.kind == "f" else (got == expected).all()
    )
    if not same:
        raise NlpfwError(f"the exported ONNX graph gives other {tagger.decoder.output_name} than the model on a check batch")


class OnnxModel:
    """An exported graph run by onnxruntime, in the place of a `nlpfw.model.Model`: with the
    model folder's tokenizer, task and decoder (for its target and `unbatch`),
    `nlpfw.model.predict_split(OnnxModel(path, loaded.model.decoder), ...)` batches, windows and
    combines exactly as the PyTorch model does."""

    def __init__(self, path: Path, decoder: Any, threads: int | None = None):
        self.decoder = decoder  # what `infer` reads of a decoder: its target and `unbatch`
        _require_onnx()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eval(self) -> OnnxModel:
        return self

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[None, torch.Tensor]:
        (output,) = self.session.run(
            None, {"input_ids": batch["input_ids"].cpu().numpy(), "mask": batch["mask"].cpu().numpy()}
        )
        return None, torch.from_numpy(output)
