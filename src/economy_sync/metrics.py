"""`economy-sync metrics`: the figures to alert on, in Prometheus text format.

Read-only; needs a member of economy_app. The drift figures count in SQL
(economy.drift_summary: checkpointed on the package's tables, a full sum on an
attachment)."""

import time

import psycopg
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from economy_sync import api, migrate
from economy_sync.doctor import OVERDUE_HOLDS, one

FIELDS = (
    "wallet.balance",
    "wallet.held",
    "wallet.lifetime_earnings",
    "profile.balance",
    "profile.lifetime_earnings",
)


def collect(conn: psycopg.Connection, attachment: str | None = None) -> bytes:
    """Every family once, each sample labelled with its attachment: of every
    attachment, or of `attachment` alone."""
    names = [attachment] if attachment else api.attachments(conn)
    registry = CollectorRegistry()
    Gauge("economy_schema_info", "the installed schema", ["revision"], registry=registry).labels(
        migrate.head_revision()
    ).set(1)

    def family(name: str, help_text: str, *labels: str) -> Gauge:
        return Gauge(name, help_text, ["attachment", *labels], registry=registry)

    drift = family("economy_drift_fields", "cached fields that disagree with the ledger", "field")
    last_fix = family(
        "economy_reconcile_last_fix_timestamp_seconds",
        "when the last reconcile run that fixed anything logged its last fix (0: never)",
    )
    last_fixes = family("economy_reconcile_last_run_fixes", "fixes logged by that run")
    parked = family(
        "economy_hot_parked_credits",
        "credits parked on hot wallets, not folded into their caches yet"
        " (run `economy-sync hot fold`)",
    )
    lag = family(
        "economy_checkpoint_lag_entries",
        "ledger entries a drift check sums: those newer than the checkpoint (all of an"
        " attachment's without one)",
    )
    overdue = family(
        "economy_holds_past_expiry",
        "holds still counted although past their expiry (run `economy-sync holds expire`)",
    )
    # counted in SQL, every attachment at once: no drifted row is fetched
    counts = {(row.attachment, row.field): row.drifted for row in api.drift_summary(conn)}
    overdue_holds = dict(conn.execute(OVERDUE_HOLDS).fetchall())
    for name in names:
        own = api.own_tables(name)
        for field in FIELDS:
            drift.labels(name, field).set(counts.get((name, field), 0))
        last_run = conn.execute(
            "SELECT extract(epoch FROM max(l.at)), count(*) FROM economy.reconcile_log l"
            " WHERE l.run_id = (SELECT x.run_id FROM economy.reconcile_log x"
            "  WHERE x.attachment IS NOT DISTINCT FROM %(a)s::text ORDER BY x.id DESC LIMIT 1)",
            {"a": None if own else name},
        ).fetchone()
        last_fix.labels(name).set(last_run[0] or 0)
        last_fixes.labels(name).set(last_run[1])
        parked.labels(name).set(
            one(conn, "SELECT count(*) FROM economy.hot_credit")
            if own
            else one(
                conn,
                "SELECT coalesce(sum(c.credits), 0) FROM economy.attached_hot_credit c"
                " WHERE c.attachment = %s",
                [name],
            )
        )
        lag.labels(name).set(api.checkpoint_lag(conn, name))
        overdue.labels(name).set(overdue_holds.get(name, 0))
    Gauge(
        "economy_metrics_last_success_timestamp_seconds",
        "when these figures were collected (an exporter file that stops moving is stale)",
        registry=registry,
    ).set(time.time())
    return generate_latest(registry)
