"""A FastAPI app behind apiprof's middleware with two CPU-bound async routes, for
sampling from outside with route labels (apiprof-spy reads the middleware's board).

GET /alpha/{n}  burn_alpha() for about 10 ms
GET /beta       burn_beta() for about 10 ms
GET /gamma      burn_gamma() for about 10 ms, sync: in the thread pool
GET /health     nothing
"""

from __future__ import annotations

from apiprof.asgi import ProfilerMiddleware
from fastapi import FastAPI

app = FastAPI()


def burn_alpha(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def burn_beta(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 11
    return total


def burn_gamma(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 13
    return total


@app.get("/alpha/{n}")
async def alpha(n: int) -> dict[str, int]:
    return {"v": burn_alpha(100_000 + n)}


@app.get("/beta")
async def beta() -> dict[str, int]:
    return {"v": burn_beta(100_000)}


@app.get("/gamma")
def gamma() -> dict[str, int]:
    return {"v": burn_gamma(100_000)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


app.add_middleware(ProfilerMiddleware)
