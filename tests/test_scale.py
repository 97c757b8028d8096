"""Reconcile at scale: 100,000 wallets, each touched exactly once, in flat memory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXECUTABLE

WALLETS = 100_000

# the peak resident memory of one command, measured by a wrapper process
PEAK_RSS = Path(__file__).resolve().parent.parent / "scripts" / "lib" / "peak_rss.py"


def reconcile_measured(dsn, *args):
    """(the JSON summary, peak RSS in KiB) of `economy-sync reconcile --json ...`."""
    command = [str(EXECUTABLE), "reconcile", "--json", "--dsn", dsn, *args]
    done = subprocess.run(
        [sys.executable, str(PEAK_RSS), *command], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout), int(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_reconcile_100k_wallets_touches_each_once_in_flat_memory(conn, dsn):
    conn.execute("SELECT economy.open_wallet(u) FROM generate_series(1, %s) u", [WALLETS])
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT id, 1.25, 'prize' FROM economy.wallet"
    )
    conn.execute("UPDATE economy.wallet SET balance = 0")  # every wallet drifted
    conn.execute("ANALYZE")

    small, small_peak = reconcile_measured(dsn, "--apply", "--all", "--limit", "10000")
    full, full_peak = reconcile_measured(dsn, "--apply", "--all", "--batch-size", "2000")

    assert small["processed"] == 10_000 and small["balance_fixes"] == 10_000
    assert full["processed"] == WALLETS and full["balance_fixes"] == WALLETS - 10_000
    assert small["errors"] == full["errors"] == 0
    logged = conn.execute(
        "SELECT count(*), count(DISTINCT wallet_id) FROM economy.reconcile_log"
    ).fetchone()
    assert logged == (WALLETS, WALLETS)  # every wallet fixed, none twice
    # 9x the wallets repaired, yet peak memory stays within a few MiB
    assert full_peak - small_peak < 8 * 1024, (small_peak, full_peak)
    print(f"peak RSS: {small_peak} KiB for 10k wallets, {full_peak} KiB for {WALLETS}")


def peak_of(*command):
    """(exit code, stdout, peak RSS in KiB) of one economy-sync command."""
    done = subprocess.run(
        [sys.executable, str(PEAK_RSS), str(EXECUTABLE), *command], capture_output=True, text=True
    )
    return done.returncode, done.stdout, int(done.stderr.strip().splitlines()[-1])


@pytest.mark.slow
def test_drift_metrics_and_doctor_stay_small_with_300k_drifted_fields(conn, dsn):
    conn.execute("SELECT economy.open_wallet(u) FROM generate_series(1, %s) u", [WALLETS])
    conn.execute(
        "INSERT INTO economy.transaction (wallet_id, amount, kind)"
        " SELECT id, 1.25, 'prize' FROM economy.wallet"
    )
    conn.execute("UPDATE economy.wallet SET balance = 0")  # three fields of every user drifted
    conn.execute("UPDATE economy.profile SET balance = 0, lifetime_earnings = 0")
    conn.execute("ANALYZE")

    code, out, drift_peak = peak_of("drift", "--json", "--dsn", dsn)
    document = json.loads(out)
    assert code == 1 and document["count"] == 3 * WALLETS and len(document["drift"]) == 1000
    code, out, metrics_peak = peak_of("metrics", "--dsn", dsn)
    assert code == 0 and 'field="profile.balance"} 100000.0' in out
    code, out, doctor_peak = peak_of("doctor", "--dsn", dsn)
    assert code == 1 and "300000 cached fields disagree" in out
    for peak in (drift_peak, metrics_peak, doctor_peak):
        assert peak < 150 * 1024, (drift_peak, metrics_peak, doctor_peak)
    print(f"peak RSS, KiB: drift {drift_peak}, metrics {metrics_peak}, doctor {doctor_peak}")
