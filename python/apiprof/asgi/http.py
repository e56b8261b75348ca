"""The raw ASGI pieces the middleware needs: the protocol's types, request header and
query lookups, and whole responses sent by the middleware itself (never by the app)."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]


def header(scope: Scope, name: bytes) -> bytes | None:
    """The first value of the request header ``name`` (lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def query_value(scope: Scope, name: str) -> str | None:
    """The first value of the query parameter ``name``, or None. The query string is
    parsed only when it contains ``name=``, so requests without it cost one search."""
    qs = scope.get("query_string", b"")
    if f"{name}=".encode() not in qs:
        return None
    values = parse_qs(qs.decode("latin-1")).get(name)
    return values[0] if values else None


async def respond(send: Send, status: int, body: bytes, content_type: str,
                  extra: Headers | None = None) -> None:
    """Sends a whole response that no cache or page may keep or reinterpret."""
    headers = [
        (b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"), *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_gzip(send: Send, scope: Scope, document: bytes,
                       extra: Headers | None = None) -> None:
    """Sends a gzipped JSON document: as it is to clients that accept gzip, else inflated."""
    headers = list(extra or ())
    if b"gzip" in (header(scope, b"accept-encoding") or b"").lower():
        headers.append((b"content-encoding", b"gzip"))
    else:
        document = gzip.decompress(document)
    await respond(send, 200, document, "application/json", headers)


async def discard(message: Message) -> None:
    """A send that drops the app's response (when the middleware answers instead)."""
