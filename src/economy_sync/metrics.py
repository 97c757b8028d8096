"""`economy-sync metrics`: the figures to alert on, in Prometheus text format.

Read-only; needs a member of economy_app. The drift figure runs a drift check
(checkpointed: cheap on the package's tables; a full sum on an attachment)."""

from collections import Counter

import psycopg
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from economy_sync import api, migrate
from economy_sync.doctor import one

FIELDS = (
    "wallet.balance",
    "wallet.held",
    "wallet.lifetime_earnings",
    "profile.balance",
    "profile.lifetime_earnings",
)


def collect(conn: psycopg.Connection, attachment: str | None = None) -> bytes:
    registry = CollectorRegistry()
    Gauge("economy_schema_info", "the installed schema", ["revision"], registry=registry).labels(
        migrate.head_revision()
    ).set(1)

    drift = Gauge(
        "economy_drift_fields", "cached fields that disagree with the ledger", ["field"],
        registry=registry,
    )  # fmt: skip
    counts = Counter(row.field for row in api.balance_drift(conn, attachment=attachment))
    for field in FIELDS:
        drift.labels(field).set(counts.get(field, 0))

    last_run = conn.execute(
        "SELECT extract(epoch FROM max(l.at)), count(*) FROM economy.reconcile_log l"
        " WHERE l.run_id = (SELECT x.run_id FROM economy.reconcile_log x"
        "  WHERE x.attachment IS NOT DISTINCT FROM %(a)s::text ORDER BY x.id DESC LIMIT 1)",
        {"a": attachment},
    ).fetchone()
    Gauge(
        "economy_reconcile_last_fix_timestamp_seconds",
        "when the last reconcile run that fixed anything logged its last fix (0: never)",
        registry=registry,
    ).set(last_run[0] or 0)
    Gauge("economy_reconcile_last_run_fixes", "fixes logged by that run", registry=registry).set(
        last_run[1]
    )

    if attachment is None:
        Gauge(
            "economy_checkpoint_lag_entries",
            "ledger entries newer than the checkpoint (summed by every drift check)",
            registry=registry,
        ).set(
            one(
                conn,
                "SELECT count(*) FROM economy.transaction t"
                " WHERE t.id > (SELECT h.checkpointed_up_to FROM economy.ledger_horizon h)",
            )
        )
        Gauge(
            "economy_holds_past_expiry",
            "holds still counted although past their expiry (run `economy-sync holds expire`)",
            registry=registry,
        ).set(
            one(
                conn,
                "SELECT count(*) FROM economy.wallet_hold h"
                " WHERE h.status = 'held' AND h.expires_at <= now()",
            )
        )
    parked = Gauge(
        "economy_hot_parked_credits",
        "credits parked on hot wallets, not folded into their caches yet"
        " (run `economy-sync hot fold`)",
        registry=registry,
    )
    if attachment is None:
        parked.set(one(conn, "SELECT count(*) FROM economy.hot_credit"))
    else:
        parked.set(
            one(
                conn,
                "SELECT count(*) FROM economy.attached_hot_credit c WHERE c.attachment = %s",
                [attachment],
            )
        )
    return generate_latest(registry)
