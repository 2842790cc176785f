"""Process logging: one handler on stderr, text (today's format) or one JSON object a line, with
context fields and a redaction filter.

- ``setup(level, fmt, secrets)`` (``server/cli.py`` ``_setup_logging``, every command) installs the
  handler: ``LIVESALE_LOG_FORMAT=text`` keeps ``<time> <LEVEL> <logger>[<pid>]: <message>``, ``json``
  writes ``{"ts", "level", "logger", "pid", "message", "exc"?, <context>, <extra>}`` per record (orjson).
- Context: ``bind(request_id=..., room_id=...)`` sets fields in a ``contextvars`` variable that every
  record logged afterwards in that task (and the tasks it spawns) carries; ``unbind(token)`` restores
  the previous ones. The HTTP middleware (``server/access_log.py``) binds the request id and the
  route's ids; the WebSocket hot path passes ids in a log call's ``extra`` only where it logs.
- ``Redact`` (a handler filter, the safety net): bearer tokens, JWTs, ``token=`` / ``secret=`` /
  ``password=`` values, URL passwords, provider keys and the process's own secrets (``protect``) are
  replaced by ``[REDACTED]`` in the message, the exception text and string extras, whatever logged them.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

import orjson

__all__ = ["setup", "bind", "unbind", "current", "protect", "redact", "Redact", "JsonFormatter", "TextFormatter",
           "FORMATS", "TEXT_FORMAT"]

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
MASK = "[REDACTED]"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("livesale_log_context", default=_EMPTY)

# the attributes every LogRecord has: anything else on a record came from ``extra``
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


# -- context ----------------------------------------------------------------------------------------------

def bind(**fields: Any) -> contextvars.Token[Mapping[str, Any]]:
    """Add ``fields`` (None values are left out) to the context of every record logged from here on in
    this task; returns the token for ``unbind``."""
    merged = dict(_context.get())
    merged.update((k, v) for k, v in fields.items() if v is not None)
    return _context.set(MappingProxyType(merged))


def unbind(token: contextvars.Token[Mapping[str, Any]]) -> None:
    """Back to the fields before the ``bind`` that returned ``token``."""
    _context.reset(token)


def current() -> Mapping[str, Any]:
    return _context.get()


# -- redaction ----------------------------------------------------------------------------------------------

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # a JWT (header.payload.signature, base64url JSON): any token this server or the platform signs
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), MASK),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + MASK),
    # query strings and key=value text: ?token=..., secret=..., password=...
    (re.compile(r"(?i)\b([\w-]*?(?:token|secret|password|passwd|api_key|apikey))"
                r"(=|\"\s*:\s*\"?)([^&\s\"',;}]+)"), r"\1\2" + MASK),
    # a URL's password: redis://:pw@host, postgresql://user:pw@host
    (re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s\"']*):([^@/\s\"']+)@"), r"\1:" + MASK + "@"),
    # payment provider keys (sk_live_..., whsec_..., rk_test_...)
    (re.compile(r"\b(sk|rk|pk)_(live|test)_[A-Za-z0-9]{8,}|\bwhsec_[A-Za-z0-9]{8,}"), MASK),
)
_secrets: set[str] = set()


def protect(*values: str | None) -> None:
    """Never log these values (the process's signing and webhook secrets): replaced wherever they appear."""
    _secrets.update(v for v in values if v and len(v) >= 8)


def redact(text: str) -> str:
    """``text`` with every token, secret and password it contains replaced by ``[REDACTED]``."""
    for value in _secrets:
        if value in text:
            text = text.replace(value, MASK)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class Redact(logging.Filter):
    """Handler filter: the record's message (formatted with its args), exception text and string extras
    redacted in place, so every formatter (and any other handler after it) sees the redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format/args pair: keep the raw message
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = redact(value)
        return True


# -- formatters ---------------------------------------------------------------------------------------------

# the ids a text line shows after its message (the JSON line has every field)
ID_FIELDS = ("request_id", "room_id", "sale_id", "hold_id", "order_id", "rid")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_") and v is not None}


class TextFormatter(logging.Formatter):
    """Today's line; the context's fields and the record's ids (``ID_FIELDS`` in ``extra``), when there are
    any, follow in brackets: ``... [request_id=4f2a... sale_id=s1]``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = dict(current())
        for key in ID_FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                fields.setdefault(key, value)
        if not fields:
            return line
        head, nl, rest = line.partition("\n")  # after the message, before a traceback
        shown = " ".join(f"{k}={v}" for k, v in fields.items())
        return f"{head} [{redact(shown)}]{nl}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts (ISO 8601 UTC, ms), level, logger, pid, message, exc (the exception's
    text, if any), the context fields, then the record's ``extra`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname, "logger": record.name, "pid": record.process, "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        for key, value in current().items():
            out.setdefault(key, redact(value) if isinstance(value, str) else value)
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        return orjson.dumps(out, default=str).decode()


# -- setup --------------------------------------------------------------------------------------------------

class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours: ``setup`` replaces it rather than adding a second one."""


def setup(level: str, fmt: str = "text", secrets: Iterable[str | None] = ()) -> None:
    """Log ``level`` and above to stderr in ``fmt`` (text | json), redacted; ``secrets`` never appear."""
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r}: expected one of {', '.join(FORMATS)}")
    protect(*secrets)
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(h)
    handler = _Handler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(Redact())
    root.addHandler(handler)
    root.setLevel(level)
