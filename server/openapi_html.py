"""The OpenAPI document as one self-contained HTML page (``GET /api/docs``): every operation with its roles,
parameters, body fields and their rules, success answers and error codes. Pure: document in, text out;
no scripts, no styles or fonts fetched from anywhere."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["render"]

Json = dict[str, Any]

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:64rem;padding:1rem 1.5rem;color:#1d1d1f}
h2{border-bottom:1px solid #ccc;margin-top:2.5rem}section{margin:1.5rem 0;padding-top:.5rem;border-top:1px solid #eee}
h3{font:600 1rem ui-monospace,monospace;margin:.2rem 0}code,.m{font-family:ui-monospace,monospace}
table{border-collapse:collapse;margin:.4rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;
vertical-align:top}th{background:#f5f5f7}.get{color:#0a7}.post{color:#06c}.put{color:#a60}.delete{color:#c22}
nav a{display:inline-block;margin-right:.8rem}.muted{color:#666}
"""


def _name(ref: str) -> str:
    return ref.rsplit("/", 1)[-1]


def _type(schema: Json) -> str:
    if "$ref" in schema:
        name = _name(schema["$ref"])
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return (" | " if key != "allOf" else " & ").join(_type(s) for s in schema[key])
    if "const" in schema:
        const = schema["const"]
        return f"<code>{escape(str(const).lower() if isinstance(const, bool) else str(const))}</code>"
    t = schema.get("type", "any")
    if isinstance(t, list):
        t = " | ".join(t)
    if t == "array" or (isinstance(t, str) and t.startswith("array")):
        return f"{escape(t)} of {_type(schema.get('items', {}))}"
    return escape(str(t))


def _rules(schema: Json) -> str:
    """A field's rules in words."""
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(f"<code>{escape(str(v))}</code>" for v in schema["enum"]))
    if "pattern" in schema:
        parts.append(f"matches <code>{escape(schema['pattern'])}</code>")
    if "minLength" in schema:
        parts.append(f"at least {schema['minLength']} character(s)")
    if "maxLength" in schema:
        parts.append(f"at most {schema['maxLength']} characters")
    if "minimum" in schema or "maximum" in schema:
        parts.append(f"from {schema.get('minimum', '-inf')} to {schema.get('maximum', 'inf')}")
    if "minItems" in schema or "maxItems" in schema:
        parts.append(f"{schema.get('minItems', 0)}-{schema.get('maxItems', 'any')} items")
    if "default" in schema:
        parts.append(f"default <code>{escape(str(schema['default']))}</code>")
    if schema.get("description"):
        parts.append(escape(schema["description"]))
    return "; ".join(parts)


def _fields(schema: Json, schemas: Json) -> str:
    if "$ref" in schema:
        schema = schemas.get(_name(schema["$ref"]), {})
    props = schema.get("properties")
    if not props:
        return f"<p>{_type(schema)}{(' -- ' + _rules(schema)) if _rules(schema) else ''}</p>"
    required = set(schema.get("required", ()))
    rows = "".join(f"<tr><td class=m>{escape(k)}</td><td>{_type(v)}</td><td>{'yes' if k in required else ''}</td>"
                   f"<td>{_rules(v)}</td></tr>" for k, v in props.items())
    return f"<table><tr><th>field</th><th>type</th><th>required</th><th>rules</th></tr>{rows}</table>"


def _operation(method: str, path: str, op: Json, schemas: Json) -> str:
    out = [f'<section id="{escape(op["operationId"])}">',
           f'<h3 class="{method}">{method.upper()} {escape(path)}</h3>',
           f"<p>{escape(op.get('summary', ''))}</p>"]
    if op.get("description"):
        out.append(f"<p class=muted>{escape(op['description'])}</p>")
    roles = [next(iter(s), "") for s in op.get("security", [])]
    who = ", ".join("no token" if not r else f"{r} token" for r in roles) or "anyone (no token)"
    out.append(f"<p><b>Auth:</b> {escape(who)}</p>")
    params = op.get("parameters", [])
    if params:
        cells = []
        for p in params:
            words = _rules({**p["schema"], "description": p.get("description") or p["schema"].get("description", "")})
            cells.append(f"<tr><td class=m>{escape(p['name'])}</td><td>{p['in']}</td><td>{_type(p['schema'])}</td>"
                         f"<td>{words}</td></tr>")
        rows = "".join(cells)
        out.append(f"<p><b>Parameters</b></p><table><tr><th>name</th><th>in</th><th>type</th><th>rules</th></tr>"
                   f"{rows}</table>")
    body = op.get("requestBody")
    if body:
        schema = body["content"]["application/json"]["schema"]
        out.append(f"<p><b>Body</b> ({'required' if body.get('required') else 'optional'})</p>")
        actions = body.get("x-actions")
        if actions:
            for action, name in actions.items():
                out.append(f"<p class=m>action <b>{escape(action)}</b></p>{_fields(schemas.get(name, {}), schemas)}")
        else:
            out.append(_fields(schema, schemas))
    answers = []
    for status, resp in op["responses"].items():
        for media, content in resp.get("content", {}).items():
            schema = content.get("schema", {})
            codes = ""
            if int(status) >= 400:
                codes = ", ".join(f"<code>{escape(c)}</code>" for c in resp.get("description", "").split(", "))
            else:
                codes = _type(schema)
            answers.append(f"<tr><td>{escape(status)}</td><td class=m>{escape(media)}</td><td>{codes}</td></tr>")
    out.append(f"<p><b>Responses</b></p><table><tr><th>status</th><th>type</th><th>body / error codes</th></tr>"
               f"{''.join(answers)}</table></section>")
    return "".join(out)


def render(doc: Json) -> str:
    """The page of ``doc`` (an OpenAPI 3.1 document as server/openapi.py builds it)."""
    schemas = doc.get("components", {}).get("schemas", {})
    by_tag: dict[str, list[str]] = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            by_tag.setdefault(op.get("tags", ["other"])[0], []).append(_operation(method, path, op, schemas))
    nav = "".join(f'<a href="#tag-{escape(t)}">{escape(t)}</a>' for t in by_tag)
    body = "".join(f'<h2 id="tag-{escape(t)}">{escape(t)}</h2>{"".join(ops)}' for t, ops in by_tag.items())
    shapes = "".join(f'<section id="schema-{escape(n)}"><h3>{escape(n)}</h3>'
                     f'{("<p>" + escape(s["description"]) + "</p>") if s.get("description") else ""}'
                     f"{_fields(s, schemas)}</section>" for n, s in schemas.items())
    info = doc["info"]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(info['title'])}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_STYLE}</style></head><body>"
            f"<h1>{escape(info['title'])} <small class=muted>v{escape(info['version'])}, OpenAPI "
            f"{escape(doc['openapi'])}</small></h1><p>{escape(info.get('description', ''))}</p>"
            f'<p>Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a></p><nav>{nav}'
            f'<a href="#schemas">schemas</a></nav>{body}<h2 id=schemas>schemas</h2>{shapes}</body></html>')
