"""Multi-row writes to an attached ledger: synced once per statement, with
nothing to set (kept for code written when that needed a setting)."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import transaction


@contextmanager
def sync_by_statement(using: str = "default") -> Iterator[None]:
    """A transaction (`atomic`). Every INSERT of several rows into an attached
    ledger (a `bulk_create`) updates each wallet's and profile's caches once,
    with or without it: kept so that code written for `economy.sync =
    'statement'` goes on working."""
    with transaction.atomic(using=using):
        yield
