"""Multi-row writes to an attached ledger, synced once per statement."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction


@contextmanager
def sync_by_statement(using: str = "default") -> Iterator[None]:
    """A transaction in which each INSERT into an attached ledger (a
    `bulk_create`) updates each wallet's and profile's caches once, at the end
    of the statement, instead of once per row: `economy.sync = 'statement'`."""
    with transaction.atomic(using=using):
        with connections[using].cursor() as cursor:
            cursor.execute("SET LOCAL economy.sync = 'statement'")
        yield
