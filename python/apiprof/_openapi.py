"""Traffic for an app from its OpenAPI schema: one URL line (docs/load.md) per GET
operation whose parameters can be filled from the schema (examples, defaults, enums, or a
sample of the type). Run as ``python -m apiprof._openapi module:app`` in the app's
directory: prints the URL lines on stdout and one line per operation left out on stderr."""

from __future__ import annotations

import importlib
import json
import re
import sys
from typing import Any
from urllib.parse import urlencode

SAMPLES = {"integer": 1, "number": 1, "string": "a", "boolean": "true"}


def sample(schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """A value for a parameter's schema, or None when there is none to give."""
    ref = schema.get("$ref")
    if isinstance(ref, str):
        schema = components.get(ref.rsplit("/", 1)[-1], {})
    for key in ("example", "default"):
        if key in schema and schema[key] is not None:
            return schema[key]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("enum"):
        return schema["enum"][0]
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        value = sample(option, components)
        if value is not None:
            return value
    typ = schema.get("type")
    if typ == "string" and schema.get("format") == "uuid":
        return "00000000-0000-0000-0000-000000000001"
    return SAMPLES.get(typ) if isinstance(typ, str) else None


def urls(spec: dict[str, Any]) -> tuple[list[str], list[str]]:
    """URL lines for the GET operations, and why each other operation was left out."""
    components = spec.get("components", {}).get("schemas", {})
    lines: list[str] = []
    skipped: list[str] = []
    for path, item in sorted(spec.get("paths", {}).items()):
        for method, op in sorted(item.items()):
            if not isinstance(op, dict):
                continue
            name = f"{method.upper()} {path}"
            if method != "get":
                skipped.append(f"{name}: not a GET (give its body in a --urls file)")
                continue
            values: dict[str, Any] = {}
            query: dict[str, Any] = {}
            missing = None
            for param in op.get("parameters", []) + item.get("parameters", []):
                where = param.get("in")
                value = sample(param.get("schema", {}), components)
                if param.get("example") is not None:
                    value = param["example"]
                if where == "path":
                    if value is None:
                        missing = param.get("name")
                    values[param.get("name")] = value
                elif where == "query" and param.get("required") and value is not None:
                    query[param["name"]] = value
                elif where == "query" and param.get("required"):
                    missing = param.get("name")
            if missing is not None:
                skipped.append(f"{name}: no value for parameter {missing}")
                continue
            filled = re.sub(r"\{([^}]+)\}", lambda m, v=values: str(v.get(m.group(1), "")), path)
            lines.append(filled + (f"?{urlencode(query)}" if query else ""))
    return lines, skipped


def main(argv: list[str]) -> int:
    if len(argv) != 1 or ":" not in argv[0]:
        print("usage: python -m apiprof._openapi module:app", file=sys.stderr)
        return 2
    module, attr = argv[0].split(":", 1)
    sys.path.insert(0, ".")
    try:
        app = getattr(importlib.import_module(module), attr)
        spec = app.openapi()
    except Exception as e:  # the app's own import error, said on one line
        print(f"cannot read the OpenAPI schema of {argv[0]}: {type(e).__name__}: {e}",
              file=sys.stderr)
        return 1
    lines, skipped = urls(spec)
    for line in skipped:
        print(f"left out: {line}", file=sys.stderr)
    sys.stdout.write(json.dumps({"urls": lines, "skipped": skipped}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
