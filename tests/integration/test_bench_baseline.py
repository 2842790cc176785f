"""``make bench --baseline``: the temporary git worktree and the environment its server runs with.

No server is started: a worktree of HEAD~1 (HEAD in a one-commit clone) is created, a child ``python``
started the way ``loadtest.serverproc.Livesale(root=...)`` starts the server must import ``server``
from it, and removing the worktree must leave no trace in ``git worktree list``. Also checks the
bench's doc splice (one baseline section, replaced in place).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest import bench
from loadtest.serverproc import ROOT, SERVER_PACKAGES, Worktree, check_imports_from, code_env, git

pytestmark = pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the project's git repository")


def _rev() -> str:
    try:
        git("rev-parse", "--verify", "--quiet", "HEAD~1^{commit}")
        return "HEAD~1"
    except RuntimeError:
        return "HEAD"


def test_worktree_builds_the_commit_and_the_child_imports_from_it(tmp_path: Path) -> None:
    wt = Worktree(_rev(), base_dir=tmp_path)
    assert not wt.path.exists()
    with wt:
        assert (wt.path / "server" / "__init__.py").exists()
        assert wt.path.resolve() in [p.resolve() for p in Worktree.listed()]
        assert git("rev-parse", "HEAD", cwd=wt.path).strip() == wt.sha

        # the child the bench starts: this interpreter, cwd and PYTHONPATH = the worktree
        env = dict(os.environ, **code_env(wt.path))
        out = subprocess.run([sys.executable, "-c", "import server, stream_gateway, inventory as i; "
                              "print(server.__file__); print(stream_gateway.__file__); print(i.__file__)"],
                             env=env, cwd=wt.path, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        for line in out.stdout.split():
            assert Path(line).resolve().is_relative_to(wt.path.resolve()), line

        found = check_imports_from(wt.path)
        assert set(found) >= {"server", "stream_gateway", "inventory"}
        assert all(Path(p).resolve().is_relative_to(wt.path.resolve()) for p in found.values())
        # and without the worktree env, this checkout's packages (the editable install) are the ones found
        assert Path(check_imports_from(ROOT)["server"]).resolve().is_relative_to(ROOT.resolve())

    assert not wt.path.exists()
    assert wt.path.resolve() not in [p.resolve() for p in Worktree.listed()]
    assert str(wt.path) not in git("worktree", "list")


def test_worktree_is_removed_when_the_run_fails(tmp_path: Path) -> None:
    wt = Worktree("HEAD", base_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        with wt:
            assert (wt.path / "server" / "__init__.py").exists()
            raise KeyboardInterrupt  # Ctrl-C in the middle of the runs
    assert not wt.path.exists()
    assert str(wt.path) not in git("worktree", "list")


def test_unknown_revision_is_refused_without_a_worktree() -> None:
    before = Worktree.listed()
    with pytest.raises(ValueError):
        Worktree("no-such-rev-0123456789")
    assert Worktree.listed() == before


def test_server_packages_cover_the_three_founding_packages() -> None:
    assert {"server", "stream_gateway", "inventory"} <= set(SERVER_PACKAGES)


def test_doc_splice_replaces_one_section() -> None:
    def fake(cpu_b: float, cpu_t: float) -> dict:
        def runs(cpu: float) -> list[dict]:
            return [{"server_us_per_msg": cpu + d, "p99_ms": 80.0, "deliveries_per_s": 10000, "all_delivered": True}
                    for d in (-0.5, 0.0, 0.5)]
        summ = {"baseline": bench.ab_summary("fanout", runs(cpu_b)), "this": bench.ab_summary("fanout", runs(cpu_t))}
        ratio = round(summ["this"]["cpu"] / summ["baseline"]["cpu"], 3)
        return {"date": "2026-01-01 00:00 UTC", "short": "abc1234", "sha": "abc1234" + "0" * 33, "this": "def5678",
                "repeat": 3, "quick": True, "steps": {"fanout": {"what": "fan-out", "runs": {}, "summary": summ,
                                                                 "cpu_ratio": ratio, "verdict": bench.ab_verdict(ratio)}}}
    doc = "# Benchmarks\n\n## Checkout\n\nx\n\n## Targets\n\n| t |\n"
    one = bench.splice_baseline(doc, bench.baseline_section(fake(8.0, 8.2)))
    assert one.count(bench.AB_START) == 1 and one.index(bench.AB_END) < one.index("## Targets")
    assert "within 5%" in one and "not within 5%" not in one
    two = bench.splice_baseline(one, bench.baseline_section(fake(8.0, 9.0)))
    assert two.count(bench.AB_START) == 1 and "not within 5%" in two and "## Checkout" in two
    assert bench.ab_verdict(1.05) == "within 5%" and bench.ab_verdict(0.9).startswith("within 5%")
    # the fan-out step's Node ws runs (interleaved with both sides): each side's p99 against Node ws's
    three = fake(8.0, 8.2)
    peer = [{"server_us_per_msg": 9.0, "p99_ms": p, "deliveries_per_s": 10000, "all_delivered": True}
            for p in (90.0, 100.0, 110.0)]
    three["steps"]["fanout"]["summary"][bench.AB_PEER] = bench.ab_summary("fanout", peer)
    row = [ln for ln in bench.baseline_section(three) if "Node ws" in ln]
    assert len(row) == 1 and "| 0.80x | 0.80x | 1.00 | no worse |" in row[0], row
    assert "Node ws" not in "\n".join(bench.baseline_section(fake(8.0, 8.2)))
