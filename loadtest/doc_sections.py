"""A section of docs/BENCHMARKS.md between two HTML comment markers, written by one benchmark step alone
(``--only pool``, ``--only signals``) without touching the rest of the document."""

from __future__ import annotations

from pathlib import Path

NOTES = Path(__file__).resolve().parent / "bench_notes.md"  # hand-written findings, copied into the doc

__all__ = ["splice", "old_section", "notes_about", "NOTES"]


def splice(doc: str, sec: list[str], start: str, end: str) -> str:
    """``doc`` with its section between ``start`` and ``end`` replaced by ``sec`` (inserted before Targets,
    else Notes, else at the end, when it has none)."""
    block = "\n".join(sec)
    if start in doc and end in doc:
        head, rest = doc.split(start, 1)
        return head + block + rest.split(end, 1)[1]
    for h in ("\n## Targets", "\n## Notes"):
        if h in doc:
            i = doc.index(h) + 1
            return doc[:i] + block + "\n\n" + doc[i:]
    return doc.rstrip("\n") + "\n\n" + block + "\n"


def old_section(doc: str, start: str, end: str) -> list[str]:
    """The section of a docs/BENCHMARKS.md text, if any (a run that did not re-run it keeps it)."""
    if start not in doc or end not in doc:
        return []
    return (start + doc.split(start, 1)[1].split(end, 1)[0] + end).splitlines()


def notes_about(prefix: str, path: Path | None = None) -> list[str]:
    """The bullets of loadtest/bench_notes.md (or ``path``) about one step: those starting with ``prefix``
    (e.g. "Interest signals"), printed in that step's section."""
    p = path or NOTES
    if not p.exists():
        return []
    return [ln[2:].strip() for ln in p.read_text().splitlines() if ln.startswith("- " + prefix)]

