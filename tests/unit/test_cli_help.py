"""Every `livesale` command and option says what it does (`--help`), and the top-level help points at the
settings and docs/OPERATIONS.md."""

from __future__ import annotations

import argparse

from server.cli import build_parser


def _walk(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    out = []
    for action in parser._actions:
        out.append((path, action))
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _walk(sub, f"{path} {name}")
    return out


def test_every_command_and_option_has_help() -> None:
    parser = build_parser()
    actions = _walk(parser, "livesale")
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}" for path, a in actions
               if not (a.help and a.help.strip() and a.help != argparse.SUPPRESS)]
    assert not missing, missing
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {c.dest: c.help for c in sub._choices_actions}
    assert set(summaries) == set(sub.choices), summaries
    assert all(h and h.strip() for h in summaries.values()), summaries
    assert {"serve", "settle", "reconcile", "audit", "demo", "token", "verify-draw"} <= set(sub.choices)
    for name, command in sub.choices.items():  # each command's own --help opens with its summary
        assert command.description, name


def test_top_level_help_lists_commands_and_settings() -> None:
    text = build_parser().format_help()
    for word in ("serve", "settle", "verify-draw", "REDIS_URL", "DATABASE_URL", "LIVESALE_LOG_FORMAT",
                 "docs/OPERATIONS.md", "Configuration"):
        assert word in text, word


def test_settle_check_options() -> None:
    args = build_parser().parse_args(["settle", "--check", "--max-lag-s", "2.5"])
    assert args.check is True and args.max_lag_s == 2.5
    assert build_parser().parse_args(["settle"]).check is False
