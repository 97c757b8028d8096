"""A tiny-scale run of the benchmark harness, to keep it working (no timing asserted)."""

import subprocess
import sys

import pytest

from economy_sync._paths import SOURCE_ROOT


@pytest.mark.slow
def test_bench_harness_smoke_run(tmp_path):
    report = tmp_path / "BENCHMARKS.md"
    done = subprocess.run(
        [sys.executable, str(SOURCE_ROOT / "scripts/bench/bench.py"), "--scale", "smoke",
         "--output", str(report)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    text = report.read_text()
    for scenario in (
        "single-row INSERT",
        "app-side sync",
        "the floor",
        "1,000-row INSERT",
        "into `economy.transaction_batch`",
        "a plain INSERT (no opt-in)",
        "into one wallet (no opt-in)",
        "floor of any sync that gives each row its balance_after",
        "each client in its own half of the wallets",
        "floor of a staged set-based path",
        "COPY of 2,000 rows",
        "one normal wallet",
        "marked hot",
        "drift scan",
        "reconcile --all",
        "MultiXacts created per row",
        "full audit",
        "attached app tables: drift scan",
        "the same without the statement trigger",
        "attached app tables: COPY of 2,000 rows",
        "## Figures of the last run",
        "HOT updates of the cache rows",
        "at +1 ms per flush: one wallet marked hot",
    ):
        assert scenario in text
    assert "EXPLAIN" in text
    assert "attached app tables: 1,000-row INSERT" in text
    # the throughput server runs with fsync on, as read back from it, beside the disk's figure
    assert "read back: fsync=on, synchronous_commit=on" in text
    assert "per fdatasync" in text
    assert "## What the figures say, and what it would take" in text  # the hand-written part
