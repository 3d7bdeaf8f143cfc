"""The ASGI app behind `nlpfw serve`: /predict (micro-batched), /health, /info, the page at /.

Records come from `nlpfw.predict.predict_records`, the function behind `nlpfw predict`, so the
service answers with exactly the command's records for whatever the task predicts. Bad input is
answered with a 4xx status and `{"detail": message}`; the server keeps serving.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

import nlpfw
from nlpfw.corpus import window_settings
from nlpfw.model import LoadedModel
from nlpfw.predict import predict_records
from nlpfw.serve.batching import MicroBatcher

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class ServeSettings:
    """How the service batches and what it accepts (the `nlpfw serve` options)."""

    batching: bool = True
    max_batch_texts: int = 64  # a micro-batch closes once it holds this many texts
    max_wait_ms: float = 2.0  # ... or this long after its first request arrived
    batch_size: int = 64  # texts per model batch inside a micro-batch (as `nlpfw predict --batch-size`)
    max_body_bytes: int = 1 << 20
    max_chars: int = 100_000  # characters in all the texts of one request
    api_key: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


class PredictRequest(BaseModel):
    """The body of POST /predict (documented in the OpenAPI schema; read by `read_texts`)."""

    texts: list[str] = Field(description="texts to predict; long texts are windowed, never cut")


def model_info(model: LoadedModel, runtime: str) -> dict[str, Any]:
    """What GET /info shows: the task, its labels, the components and the plugins that supplied
    them, and the window long texts are read in."""
    recipe = model.recipe
    window, stride = window_settings(recipe.trainer.window, recipe.trainer.stride, model.model.encoder.max_chars)
    components = {kind: getattr(recipe, kind) for kind in ("task", "dataset", "encoder", "decoder")}
    folder = model.directory
    if folder is not None and folder.name == "model":  # a run folder's model/: name the run
        folder = folder.parent
    return {
        "task": recipe.task.type,
        "labels": list(model.task.labels),
        "model": {
            "folder": folder.name if folder else None,  # the name only: clients learn no server paths
            "recipe": recipe.name,
            "runtime": runtime,
            **{kind: section.type for kind, section in components.items()},
        },
        "versions": {"nlpfw": nlpfw.__version__} | {
            section.type: {"plugin": section.component.origin.plugin, "version": section.component.origin.version}
            for section in components.values()
        },
        "window": window,
        "stride": stride,
    }  # fmt: skip


def _status(code: int, message: str) -> HTTPException:
    return HTTPException(code, message)


async def read_texts(request: Request, settings: ServeSettings) -> list[str]:
    """The `texts` of a /predict body, or an HTTPException saying what is wrong with it. The
    body is read no further than the size limit."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
        raise _status(413, f"request body of {int(length):,} bytes is over the limit of {settings.max_body_bytes:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > settings.max_body_bytes:
            raise _status(413, f"request body is over the limit of {settings.max_body_bytes:,} bytes")
    try:
        payload = json.loads(bytes(body))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _status(400, f'the body is not valid JSON ({error}); send {{"texts": ["...", ...]}}') from None
    if not isinstance(payload, dict) or "texts" not in payload:
        raise _status(422, 'the body has no "texts"; send {"texts": ["...", ...]}')
    texts = payload["texts"]
    if not isinstance(texts, list):
        raise _status(422, f'"texts" must be a list of strings, got {type(texts).__name__}')
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            raise _status(422, f'"texts"[{index}] is {type(text).__name__}, not a string')
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:  # JSON's "\ud800": a lone surrogate, no character
                raise _status(422, f'"texts"[{index}] is not valid Unicode: a lone surrogate at character {error.start}') from None
    chars = sum(len(t) for t in texts)
    if chars > settings.max_chars:
        raise _status(413, f"the texts hold {chars:,} characters, over the limit of {settings.max_chars:,} a request")
    return texts


def create_app(model: LoadedModel, settings: ServeSettings = ServeSettings(), runtime: str = "torch") -> FastAPI:
    """The service for a loaded model (`runtime` names what runs it: torch or onnxruntime)."""
    batcher = MicroBatcher(
        lambda records: list(predict_records(model, records, settings.batch_size)),
        max_texts=settings.max_batch_texts, max_wait=settings.max_wait_ms / 1000, enabled=settings.batching,
    )  # fmt: skip
    info = model_info(model, runtime)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    def authorised(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get(API_KEY_HEADER) or ""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = given or token
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, f"a valid API key is needed: send it in the {API_KEY_HEADER} header",
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip

    app = FastAPI(
        title="nlpfw", version=nlpfw.__version__, lifespan=lifespan,
        description=f"{info['task']} with {info['model']['encoder']} + {info['model']['decoder']} "
                    f"({info['model']['folder']}); records as `nlpfw predict` writes them.",
    )  # fmt: skip

    @app.post(
        "/predict", dependencies=[Depends(authorised)], response_model=list[dict[str, Any]],
        openapi_extra={"requestBody": {"required": True, "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()}}}},
        responses={400: {"description": "not JSON"}, 401: {"description": "no or wrong API key"},
                   413: {"description": "body or texts over the limits"}, 422: {"description": "no list of strings"}},
    )  # fmt: skip
    async def predict(request: Request) -> JSONResponse:
        """One record per text, in order: exactly the records of `nlpfw predict`."""
        with batcher.arrival():
            texts = await read_texts(request, settings)
        return JSONResponse(await batcher.submit([{"text": t} for t in texts]))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness, and how many model batches and texts the server has run."""
        return {"status": "ok", "batches": batcher.batches, "texts": batcher.texts}

    @app.get("/info", dependencies=[Depends(authorised)])
    async def get_info() -> dict[str, Any]:
        """The task, its labels, the model's components and plugin versions, the window."""
        return info | {"batching": {"enabled": settings.batching, "max_texts": settings.max_batch_texts,
                                    "max_wait_ms": settings.max_wait_ms}}  # fmt: skip

    page = resources.files("nlpfw.serve").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app
