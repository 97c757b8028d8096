"""The short soak: faults injected while writers, forgers and a reconcile run (scripts/soak)."""

import subprocess
import sys

import pytest

from economy_sync._paths import SOURCE_ROOT


@pytest.mark.slow
def test_short_soak_with_crash_and_killed_backends_passes():
    soak = SOURCE_ROOT / "scripts/soak/soak.py"
    done = subprocess.run(
        [sys.executable, str(soak), "--seconds", "15", "--crashes", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "soak result: PASS" in done.stdout
    counts = dict(
        line.strip().rsplit(": ", 1) for line in done.stdout.splitlines() if line.startswith("  ")
    )
    assert int(counts["server crashes (immediate stop)"]) == 1
    assert int(counts["backends terminated"]) > 0
    assert int(counts["reconcile runs"]) > 0
    assert int(counts["forgeries refused"]) > 0
    assert int(counts["transfer legs reversed"]) > 0
