"""Route templates of FastAPI's included routers: every include prefix, nested includes."""

from __future__ import annotations

from apiprof._route_match import map_paths
from fastapi import APIRouter, FastAPI


def read_item(item_id: int) -> dict[str, int]:
    return {"id": item_id}


def create_item() -> dict[str, str]:
    return {}


def nested_app() -> FastAPI:
    items = APIRouter(prefix="/items")
    items.get("/{item_id}")(read_item)
    items.post("/")(create_item)
    api = APIRouter(prefix="/api/v1")
    api.include_router(items)
    app = FastAPI()
    app.include_router(api)
    return app


def test_nested_include_prefixes_make_the_full_template() -> None:
    found = map_paths(nested_app(), [("GET", "/api/v1/items/3"), ("POST", "/api/v1/items/"),
                                     ("DELETE", "/api/v1/items/3"), ("GET", "/nope")])
    assert [f["route"] for f in found] == [
        "/api/v1/items/{item_id}", "/api/v1/items/", "/api/v1/items/{item_id}", None]
    assert found[0]["endpoint"]["qualname"] == "read_item"
    assert found[1]["endpoint"]["qualname"] == "create_item"
    assert found[2]["endpoint"] is None  # 405: no endpoint runs
