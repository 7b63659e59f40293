"""Helpers for the operations tests: a tiny JSON Schema validator, metrics parsing, config files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JSON_DOC = ROOT / "docs" / "json.md"


# ---------------------------------------------------------------------- JSON Schema (the subset docs/json.md uses)


class SchemaError(AssertionError):
    pass


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
SUPPORTED = {"type", "enum", "const", "required", "properties", "additionalProperties", "items", "minimum",
             "pattern", "$ref", "$defs", "allOf", "anyOf", "oneOf", "description"}


def validate(value, schema: dict, root: dict | None = None, where: str = "$") -> None:
    """Raise SchemaError naming the JSON path of the first violation."""
    root = root if root is not None else schema
    unknown = set(schema) - SUPPORTED
    if unknown:
        raise SchemaError(f"{where}: schema uses unsupported keywords {sorted(unknown)}")
    if "$ref" in schema:
        ref = schema["$ref"]
        assert ref.startswith("#/$defs/"), ref
        validate(value, root["$defs"][ref[len("#/$defs/"):]], root, where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](value) for t in types):
            raise SchemaError(f"{where}: expected {types}, got {type(value).__name__}: {value!r:.80}")
    if "enum" in schema and value not in schema["enum"]:
        raise SchemaError(f"{where}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise SchemaError(f"{where}: {value!r} != {schema['const']!r}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        raise SchemaError(f"{where}: {value} < {schema['minimum']}")
    if "pattern" in schema and isinstance(value, str) and not re.search(schema["pattern"], value):
        raise SchemaError(f"{where}: {value!r} does not match {schema['pattern']}")
    for sub in schema.get("allOf", []):
        validate(value, sub, root, where)
    if "anyOf" in schema or "oneOf" in schema:
        alts = schema.get("anyOf") or schema.get("oneOf")
        ok = 0
        for sub in alts:
            try:
                validate(value, sub, root, where)
                ok += 1
            except SchemaError:
                pass
        if ok == 0 or ("oneOf" in schema and ok != 1):
            raise SchemaError(f"{where}: matches {ok} of the alternatives")
    if isinstance(value, dict):
        for k in schema.get("required", []):
            if k not in value:
                raise SchemaError(f"{where}: missing required {k!r}")
        props = schema.get("properties", {})
        for k, v in value.items():
            if k in props:
                validate(v, props[k], root, f"{where}.{k}")
            else:
                extra = schema.get("additionalProperties", True)
                if extra is False:
                    raise SchemaError(f"{where}: unexpected property {k!r}")
                if isinstance(extra, dict):
                    validate(v, extra, root, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            validate(v, schema["items"], root, f"{where}[{i}]")


def documented_schemas() -> dict[str, dict]:
    """``json schema=NAME`` blocks of docs/json.md, parsed."""
    text = JSON_DOC.read_text(encoding="utf-8")
    out = {}
    for m in re.finditer(r"^```json schema=([^\n]+)\n(.*?)^```", text, re.S | re.M):
        name = m.group(1).strip()
        assert name not in out, f"docs/json.md: two schemas for {name}"
        out[name] = json.loads(m.group(2))
    return out


# ---------------------------------------------------------------------- Prometheus text format


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
                     r' (-?(?:\d+(?:\.\d*)?(?:e[+-]?\d+)?|NaN|[+-]Inf))(?: -?\d+)?$')


def parse_prometheus(text: str) -> dict[str, dict[tuple, float]]:
    """Strictly parse the text exposition format: name -> {sorted label items: value}."""
    assert text.endswith("\n"), "a textfile must end with a newline"
    typed: dict[str, str] = {}
    out: dict[str, dict[tuple, float]] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("gauge", "counter", "untyped"), line
            assert name not in typed, f"TYPE given twice for {name}"
            typed[name] = kind
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a valid sample line: {line!r}"
        name, labels, value = m.groups()
        assert name in typed, f"{name} has no TYPE line before its samples"
        items = tuple(sorted(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', labels or "")))
        assert items not in out.setdefault(name, {}), f"duplicate series {name}{items}"
        out[name][items] = float(value)
    return out


# ---------------------------------------------------------------------- running the CLI


def run_cli(cli, *args, env: dict | None = None, unset: tuple[str, ...] = (), stdin_data: bytes | None = None,
            timeout: float = 300):
    """Like ``cli(...)``, but feeding ``stdin_data`` (a pipe, as from a shell pipeline)."""
    return cli(*args, env=env, unset=unset, stdin=b"" if stdin_data is None else stdin_data, timeout=timeout)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
