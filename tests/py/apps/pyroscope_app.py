"""An app whose kept profiles go to Pyroscope (tests/py/test_pyroscope.py): on-demand
profiles with the token in $APP_TOKEN, pushed to $APIPROF_PYROSCOPE_URL every 0.2 s
(service name: $APIPROF_SERVICE).

GET /          health
GET /work      20 ms of CPU in planted_work()
"""

from __future__ import annotations

import os
import time

from apiprof.fastapi import instrument
from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def health() -> dict[str, str]:
    return {"status": "ok"}


def planted_work() -> int:
    end = time.thread_time() + 0.02
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


@app.get("/work")
async def work() -> dict[str, int]:
    return {"n": planted_work()}


instrument(app, token=os.environ["APP_TOKEN"], pyroscope_interval_s=0.2)
