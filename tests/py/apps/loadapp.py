"""A small, fast ASGI app for the load-generator tests (served by uvicorn).

/fast          200 "ok"
/status/NNN    that status, empty body
/chunked       a streamed (chunked) body of 3 x 1000 bytes
/echo          POST: 200 if the body is the JSON {"n": 1} with Content-Type application/json,
               else 400
"""

from __future__ import annotations

from typing import Any

Send = Any
Receive = Any


async def respond(send: Send, status: int, body: bytes = b"", chunks: int = 0) -> None:
    headers = [(b"content-type", b"text/plain")]
    if not chunks:
        headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for _ in range(chunks):
        await send({"type": "http.response.body", "body": body, "more_body": True})
    await send({"type": "http.response.body", "body": b"" if chunks else body})


async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if path == "/fast" or path == "/":
        await respond(send, 200, b"ok")
    elif path.startswith("/status/"):
        await respond(send, int(path.rsplit("/", 1)[1]))
    elif path == "/chunked":
        await respond(send, 200, b"x" * 1000, chunks=3)
    elif path == "/form":  # a form-encoded login: 422 unless its own headers came
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        ok = (body == b"user=ann&pw=x" and headers.get(b"x-token") == b"abc"
              and headers.get(b"content-type") == b"application/x-www-form-urlencoded")
        await respond(send, 200 if ok else 422, body)
    elif path == "/echo":
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        ok = body == b'{"n": 1}' and headers.get(b"content-type") == b"application/json"
        await respond(send, 200 if ok else 400, body)
    else:
        await respond(send, 404, b"not found")
