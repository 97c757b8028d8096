"""economy-sync: cached balances kept exactly in sync with an append-only ledger,
inside PostgreSQL. This package is a thin layer over the SQL in sql/."""

from economy_sync.api import (
    CheckpointMismatch,
    DriftRow,
    ReconcileRow,
    ReconcileSummary,
    WalletNotFound,
    advance_checkpoint,
    audit_ledger_checkpoint,
    get_balance_drift,
    recompute_lifetime_earnings,
    reconcile,
    reset_ledger_checkpoint,
    sync_profile_by_user_id,
    sync_wallet_to_profile,
)

__all__ = [
    "CheckpointMismatch",
    "DriftRow",
    "ReconcileRow",
    "ReconcileSummary",
    "WalletNotFound",
    "advance_checkpoint",
    "audit_ledger_checkpoint",
    "get_balance_drift",
    "recompute_lifetime_earnings",
    "reconcile",
    "reset_ledger_checkpoint",
    "sync_profile_by_user_id",
    "sync_wallet_to_profile",
]
