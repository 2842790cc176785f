"""server/logs.py: the JSON line's fields, the log context, the text line, and the redaction safety net."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import orjson
import pytest

from server import logs


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO, logging.Handler]]:
    """A logger of its own whose records go through the redaction filter to a JSON formatter."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.Redact())
    logger = logging.getLogger("test.logs." + secrets.token_hex(4))
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, out, handler
    logger.removeHandler(handler)


def _lines(out: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_json_line_fields_context_and_extra(capture: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, out, _ = capture
    token = logs.bind(request_id="r-1", sale_id="s-9", room_id=None)
    try:
        logger.warning("sold %d of %s", 3, "s-9", extra={"rid": "b-7"})
    finally:
        logs.unbind(token)
    logger.info("after")
    first, second = _lines(out)
    assert first["message"] == "sold 3 of s-9" and first["level"] == "WARNING"
    assert first["logger"] == logger.name and isinstance(first["pid"], int)
    assert str(first["ts"]).endswith("Z") and "T" in str(first["ts"])
    assert first["request_id"] == "r-1" and first["sale_id"] == "s-9" and first["rid"] == "b-7"
    assert "room_id" not in first  # None is left out
    assert "request_id" not in second and second["message"] == "after"


def test_exception_text_is_a_field(capture: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, out, _ = capture
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("failed")
    (line,) = _lines(out)
    assert line["message"] == "failed" and "ValueError: boom" in str(line["exc"])


def test_secrets_tokens_and_passwords_are_redacted(
        capture: tuple[logging.Logger, io.StringIO, logging.Handler]) -> None:
    logger, out, _ = capture
    secret = "s3cr3t-" + secrets.token_urlsafe(32)
    logs.protect(secret)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"
    logger.info("headers %s", {"Authorization": f"Bearer {jwt}"})
    logger.info("GET /ws?room=r1&token=%s done", jwt)
    logger.info("url redis://:hunter2pass@10.0.0.1:6379/0 and secret %s", secret)
    logger.info("raw token %s", jwt, extra={"detail": f"token={jwt}"})
    try:
        raise RuntimeError(f"bad signature on {jwt} with {secret}")
    except RuntimeError:
        logger.exception("verify failed")
    text = out.getvalue()
    for leaked in (jwt, secret, "hunter2pass", "c2lnbmF0dXJlLWJ5dGVz"):
        assert leaked not in text, leaked
    lines = _lines(out)
    assert len(lines) == 5 and all("[REDACTED]" in str(line) for line in lines)
    assert "room=r1" in str(lines[1]["message"])  # what is not secret stays


def test_text_format_is_todays_plus_ids() -> None:
    record = logging.makeLogRecord({"name": "livesale", "levelname": "INFO", "levelno": 20, "msg": "hello",
                                    "process": 42})
    line = logs.TextFormatter().format(record)
    assert line.endswith(" INFO livesale[42]: hello")
    token = logs.bind(request_id="abc")
    try:
        record.sale_id = "s1"
        assert logs.TextFormatter().format(record).endswith("livesale[42]: hello [request_id=abc sale_id=s1]")
    finally:
        logs.unbind(token)


def test_setup_replaces_its_handler_and_checks_the_format() -> None:
    root = logging.getLogger()
    level = root.level
    try:
        logs.setup("INFO", "json")
        logs.setup("WARNING", "text")
        ours = [h for h in root.handlers if isinstance(h, logs._Handler)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.TextFormatter)
        assert root.level == logging.WARNING
        with pytest.raises(ValueError):
            logs.setup("INFO", "xml")
    finally:
        for h in [h for h in root.handlers if isinstance(h, logs._Handler)]:
            root.removeHandler(h)
        root.setLevel(level)
