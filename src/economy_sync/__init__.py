"""economy-sync: cached balances kept exactly in sync with an append-only ledger,
inside PostgreSQL. This package is a thin layer over the SQL in sql/."""

from economy_sync.api import (
    DriftRow,
    ReconcileRow,
    ReconcileSummary,
    WalletNotFound,
    advance_checkpoint,
    get_balance_drift,
    recompute_lifetime_earnings,
    reconcile,
    sync_profile_by_user_id,
    sync_wallet_to_profile,
)

__all__ = [
    "DriftRow",
    "ReconcileRow",
    "ReconcileSummary",
    "WalletNotFound",
    "advance_checkpoint",
    "get_balance_drift",
    "recompute_lifetime_earnings",
    "reconcile",
    "sync_profile_by_user_id",
    "sync_wallet_to_profile",
]
