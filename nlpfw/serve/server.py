"""Running the service: load the model (PyTorch or an exported ONNX graph), bind, drain on SIGTERM.

One process serves with `uvicorn.Server`; `workers > 1` hands uvicorn an app factory that each
worker process calls, with the settings in the environment variable `NLPFW_SERVE`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path
from typing import Any

import torch
import uvicorn

from nlpfw.errors import NlpfwError
from nlpfw.model import LoadedModel, load_model
from nlpfw.serve.app import ServeSettings, create_app

ENVIRONMENT = "NLPFW_SERVE"  # the settings handed to worker processes


class ServedGraph:
    """An exported graph in the place of a `LoadedModel.model`: the encoder stays for its
    tokenizer and window (`char_ids`, `max_chars`), the graph computes the decoder's output."""

    def __init__(self, path: Path, loaded: LoadedModel, threads: int | None = None):
        from nlpfw.export import OnnxModel

        sidecar = Path(f"{path}.json")
        if sidecar.is_file():
            labels = json.loads(sidecar.read_text(encoding="utf-8")).get("labels")
            if labels != loaded.model.decoder.labels:
                raise NlpfwError(f"--onnx {path}: its labels ({sidecar.name}) are not the model folder's; "
                                 "export it from this run folder")  # fmt: skip
        try:
            self.tagger = OnnxModel(path, loaded.model.decoder, threads)
        except NlpfwError:
            raise
        except Exception as error:  # onnxruntime's own exception types
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise NlpfwError(f"--onnx {path}: onnxruntime cannot load it: {first}") from None
        self.encoder = loaded.model.encoder
        self.decoder = self.tagger.decoder

    def eval(self) -> ServedGraph:
        return self

    def predict(self, batch: dict[str, torch.Tensor]) -> tuple[None, torch.Tensor]:
        return self.tagger.predict(batch)


def load_for_serving(run_dir: Path, registry: Any, device: str, onnx: Path | None, threads: int | None) -> LoadedModel:
    """The run folder's model, its tags computed by the ONNX graph `onnx` when given."""
    if threads:
        torch.set_num_threads(threads)
    model = load_model(run_dir, registry, device)
    if onnx is not None:
        if not Path(onnx).is_file():
            raise NlpfwError(f"--onnx: file not found: {onnx}")
        model = dataclasses.replace(model, model=ServedGraph(Path(onnx), model, threads))  # type: ignore[arg-type]
    return model


def serve(model: LoadedModel, settings: ServeSettings, host: str, port: int, runtime: str,
          drain_timeout: float = 30.0, log_level: str = "info") -> None:  # fmt: skip
    """Serve in this process until SIGTERM or Ctrl-C, then finish the requests in flight and
    return (the command exits 0)."""
    app = create_app(model, settings, runtime)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_timeout,
                            server_header=False)  # fmt: skip
    # uvicorn re-raises the stopping signal once it has drained; with these handlers in place
    # that re-raise is a no-op, so a drained server exits 0 rather than dying by the signal.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        uvicorn.Server(config).run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve_workers(options: dict[str, Any], settings: ServeSettings, workers: int, host: str, port: int,
                  drain_timeout: float = 30.0, log_level: str = "info") -> None:  # fmt: skip
    """Serve with `workers` processes sharing the socket; each loads the model itself."""
    os.environ[ENVIRONMENT] = json.dumps({"options": options, "settings": dataclasses.asdict(settings)})
    uvicorn.run("nlpfw.serve.server:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, timeout_graceful_shutdown=drain_timeout, server_header=False)  # fmt: skip


def app_from_environment() -> Any:
    """The app of one worker process, from what `serve_workers` put in the environment."""
    from nlpfw.cli import _quiet_transformers
    from nlpfw.plugins import build_registry, get_plugin_manager

    _quiet_transformers()
    state = json.loads(os.environ[ENVIRONMENT])
    options = state["options"]
    registry = build_registry(get_plugin_manager(modules=tuple(options["plugins"])))
    onnx = Path(options["onnx"]) if options["onnx"] else None
    model = load_for_serving(Path(options["run_dir"]), registry, options["device"], onnx, options["threads"])
    return create_app(model, ServeSettings(**state["settings"]), "onnxruntime" if onnx else "torch")
