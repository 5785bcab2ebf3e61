"""Reference for bench/serve_load.py: a bare Starlette app doing the service's work with no framework extras.

Same request and response shape as the service's /classify: decode, model forward, threshold, answer.
No batching across requests and no logging. Run: uvicorn bench.bare_app:app --port 3100
"""

from __future__ import annotations

import base64
import os

import numpy as np
import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from teaming._validation import DataError
from teaming.decode import decode_image
from teaming.model import load_artifact
from teaming.model.runtime import choose
from teaming.policy import load_policy

MODEL = os.environ.get("TEAMING_MODEL_DIR", "models/cifar10h-default")
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
artifact = load_artifact(MODEL, device)
artifact.use(choose(os.environ.get("TEAMING_BACKEND", "auto"), device, artifact.meta.backends)[0])  # as the service
policy = load_policy(os.path.join(MODEL, "policy.json"))


def work(items: list[dict]) -> list[dict]:
    x = np.stack([decode_image(base64.b64decode(i["data"]), 32, i.get("id") or "image").numpy() for i in items])
    with torch.inference_mode():
        probs = artifact.predict_proba(torch.from_numpy(x).to(device))
    defer = policy.decide(probs)
    return [
        {
            "item_id": it.get("id"),
            "decision": "deferred" if d else "auto",
            "label": None if d else artifact.classes[int(p.argmax())],
            "confidence": float(p.max()),
        }
        for it, p, d in zip(items, probs, defer)
    ]


async def classify(request: Request) -> JSONResponse:
    body = await request.json()
    try:
        return JSONResponse(await run_in_threadpool(work, body["images"]))
    except DataError as err:
        return JSONResponse({"error": str(err)}, status_code=400)


app = Starlette(routes=[Route("/classify", classify, methods=["POST"])])
