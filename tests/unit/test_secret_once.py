"""The signing secret is resolved once, when the application is built: no request reads a file."""

from __future__ import annotations

from pathlib import Path

from server.app import create_app
from server.appkeys import SETTINGS
from server.config import Settings


def test_secret_resolved_at_build_time(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path), secret="")
    app = create_app(settings)
    secret_file = tmp_path / "secret.key"
    resolved = app[SETTINGS].secret
    assert resolved and resolved == secret_file.read_text().strip()
    secret_file.unlink()  # a request after this must not need the file
    assert app[SETTINGS].secret == resolved
    assert not secret_file.exists()


def test_given_secret_is_kept(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path), secret="k" * 40)
    assert create_app(settings)[SETTINGS].secret == "k" * 40
    assert not (tmp_path / "secret.key").exists()
