"""A small FastAPI app with a known hot function, for `apiprof bench --app --profile`.

GET  /items/{item_id}   sync route (thread pool): calls hot() exactly once
GET  /health            async route: calls nothing of this module
POST /items             async route: 201, calls hot() exactly once
GET  /v1/things/{name}  a route of a mounted sub-app
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()
v1 = FastAPI()
app.mount("/v1", v1)


def hot(n: int) -> int:
    """The hot spot: one call per /items request."""
    return sum(i * i for i in range(n))


@app.get("/items/{item_id}")
def get_item(item_id: int) -> dict[str, int]:
    return {"id": item_id, "score": hot(3000)}


@app.post("/items", status_code=201)
async def create_item() -> dict[str, int]:
    return {"score": hot(1000)}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@v1.get("/things/{name}")
async def thing(name: str) -> dict[str, str]:
    return {"name": name}
