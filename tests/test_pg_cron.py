"""The pg_cron recipe of docs/OPERATIONS.md, as written, on a throwaway server
configured as the doc says, that asks every connection for a password: the
scheduled checkpoint advances the checkpoint, the
fold folds a hot wallet, and the drift check fails loudly once drift appears."""

import re
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from helpers import SEED_ATTACH, SEED_TABLES, pay

from economy_sync import migrate
from economy_sync._paths import SOURCE_ROOT
from economy_sync.pg_binaries import find_pg_ctl
from economy_sync.throwaway import ThrowawayServer


def documented(marker: str, language: str) -> str:
    """The block that follows a marker in docs/OPERATIONS.md."""
    text = (SOURCE_ROOT / "docs" / "OPERATIONS.md").read_text()
    found = re.search(rf"<!-- {marker}.*?-->\n```{language}\n(.*?)```", text, re.S)
    assert found, f"the {marker} are missing from docs/OPERATIONS.md"
    return found.group(1)


def settings() -> str:
    """The documented postgresql.conf lines, as the server's -c options."""
    options = []
    for line in documented("pg_cron settings", "ini").splitlines():
        name, value = (part.strip() for part in line.split("#")[0].split("=", 1))
        options.append(f"-c {name}={value.strip(chr(39))}")
    return " ".join(options)


def recipe() -> str:
    return documented("pg_cron recipe", "sql")


def runs(conn) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for name, status, message in conn.execute(
        "SELECT j.jobname, d.status, d.return_message FROM cron.job_run_details d"
        " JOIN cron.job j USING (jobid) WHERE d.status IN ('succeeded', 'failed')"
        " ORDER BY d.start_time"
    ):
        found.setdefault(name, []).append((status, message))
    return found


def pg_cron_is_installed() -> bool:
    pg_config = Path(find_pg_ctl()).parent / "pg_config"
    libdir = subprocess.run(
        [pg_config, "--pkglibdir"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return (Path(libdir) / "pg_cron.so").exists()


@pytest.mark.slow
def test_the_pg_cron_recipe_runs_as_documented():
    if not pg_cron_is_installed():  # scripts/test installs it for the system server only
        pytest.skip(f"pg_cron is not built for the server in {Path(find_pg_ctl()).parent}")
    # passwords required, as on a hosted server: pg_cron's default, a libpq
    # connection to localhost without one, would fail every job
    with ThrowawayServer("economy", settings(), password="hosted-like") as server:
        migrate.upgrade(server.dsn)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_cron")  # the documented superuser step
            wallet = conn.execute("SELECT economy.open_wallet(1)").fetchone()[0]
            treasury = conn.execute("SELECT economy.open_wallet(2)").fetchone()[0]
            conn.execute("SELECT economy.set_hot(%s)", [treasury])
            for amount in (5, 7):
                conn.execute("SELECT economy.post_transaction(%s, %s, 'prize')", [wallet, amount])
                conn.execute("SELECT economy.post_transaction(%s, %s, 'fee')", [treasury, amount])
            conn.execute(SEED_TABLES)  # an attachment, checkpointed by the same job
            conn.execute(SEED_ATTACH)
            conn.execute("INSERT INTO app_profile DEFAULT VALUES")
            conn.execute("INSERT INTO app_wallet (profile_id) VALUES (1)")
            pay(conn, 1, 3)
            conn.execute(recipe())
            # every job every minute, so the test waits one minute, not ten
            conn.execute("SELECT cron.alter_job(jobid, schedule => '* * * * *') FROM cron.job")
            conn.execute("UPDATE economy.profile SET balance = balance + 1 WHERE user_id = 1")

            deadline = time.monotonic() + 150
            wanted = {
                "economy-checkpoint",
                "economy-fold-hot",
                "economy-drift-check",
                "economy-expire-holds",
            }
            while not wanted <= set(runs(conn)) and time.monotonic() < deadline:
                time.sleep(2)
            done = runs(conn)
            assert wanted <= set(done), f"jobs that ran in 150 s: {done}"

            assert done["economy-checkpoint"][0][0] == "succeeded", done
            assert conn.execute(
                "SELECT checkpointed_up_to FROM economy.ledger_horizon"
            ).fetchone() == (4,)
            assert conn.execute(
                "SELECT checkpointed_up_to FROM economy.attached_ledger_horizon"
            ).fetchone() == (1,)
            assert done["economy-fold-hot"][0][0] == "succeeded", done
            assert conn.execute("SELECT count(*) FROM economy.hot_credit").fetchone() == (0,)
            assert conn.execute(
                "SELECT balance FROM economy.wallet WHERE id = %s", [treasury]
            ).fetchone() == (12,)
            status, message = done["economy-drift-check"][0]
            assert status == "failed" and "economy drift found" in message, done
            assert done["economy-expire-holds"][0][0] == "succeeded", done
