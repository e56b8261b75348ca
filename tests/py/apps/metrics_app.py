"""Routes for the Prometheus metrics tests (tests/py/test_metrics.py); the middleware's
metrics options come from the environment (APIPROF_METRICS_PATH, _TOKEN, _PORT,
APIPROF_STATS_DIR, APIPROF_SERVICE).

GET /                 health, returns at once
GET /sleep/{ms}       async: awaits asyncio.sleep(ms / 1000)
GET /boom             answers 500: an error
"""

from __future__ import annotations

import asyncio

from apiprof.fastapi import instrument
from fastapi import FastAPI, Response

app = FastAPI()


@app.get("/")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/sleep/{ms}")
async def sleep(ms: int) -> dict[str, int]:
    await asyncio.sleep(ms / 1000)
    return {"ms": ms}


@app.get("/boom")
async def boom() -> Response:
    return Response(b"planted failure", status_code=500)


instrument(app, flush_s=0.2)
