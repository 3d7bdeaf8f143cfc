"""`nlpfw serve`: a trained model as an HTTP service with a page that shows its predictions.

Needs the `serve` extra (`pip install 'nlpfw[serve]'`: FastAPI, uvicorn, httpx)."""

from __future__ import annotations
