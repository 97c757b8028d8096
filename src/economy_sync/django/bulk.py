"""Multi-row writes to an attached ledger from Django."""

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connections, transaction

ATTACHMENT_OF = "SELECT a.name FROM economy.attachments a WHERE a.ledger = to_regclass(%s)"


@contextmanager
def sync_by_statement(using: str = "default") -> Iterator[None]:
    """A transaction (`atomic`). Every INSERT of several rows into an attached
    ledger (a `bulk_create`) updates each wallet's and profile's caches once,
    with or without it: kept so that code written for `economy.sync =
    'statement'` goes on working."""
    with transaction.atomic(using=using):
        yield


@contextmanager
def loading_without_sync(ledger, using: str = "default") -> Iterator[None]:
    """A transaction in which rows written to ledger (the model of an attached
    ledger, owned by your role) skip the sync: the README's bulk-load recipe,
    deferred foreign keys and all. On leaving it the sync is switched on again
    and one reconcile of the attachment repairs every cache; an error undoes
    it all. Foreign keys are checked statement by statement within it."""
    connection = connections[using]
    table = connection.ops.quote_name(ledger._meta.db_table)
    with transaction.atomic(using=using), connection.cursor() as cursor:
        cursor.execute(ATTACHMENT_OF, [table])
        found = cursor.fetchone()
        if found is None:
            raise ValueError(f"{ledger._meta.label}'s table {table} is no attached ledger")
        # Django's foreign keys are deferred: their checks would be pending
        # trigger events, which the ALTER TABLE that switches the sync on refuses
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")  # quoted by Django
        yield
        cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        cursor.execute(
            "SELECT count(*) FROM economy.reconcile_economy(dry_run => false, attachment => %s)",
            [found[0]],
        )


def psycopg_connection(using: str = "default"):
    """Django's own connection as psycopg 3 has it, in Django's transaction,
    for the package's Python calls: `api.wallet_balance(psycopg_connection(),
    wallet.pk, attachment="esports")`."""
    connection = connections[using]
    connection.ensure_connection()
    return connection.connection
