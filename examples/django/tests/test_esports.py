"""The example app's economy through its ORM, attached by its migrations:
every way Django writes keeps the caches right, and drift made behind the
sync's back is found and repaired by `manage.py reconcile_economy`."""

import io
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from esports.models import DeltaCrownTransaction, DeltaCrownWallet, Profile

from economy_sync import api
from economy_sync.django.bulk import loading_without_sync, psycopg_connection, sync_by_statement

pytestmark = pytest.mark.django_db


@pytest.fixture
def economy():
    """ana's wallet, bo's wallet and the ownerless treasury."""
    ana, bo = Profile.objects.create(username="ana"), Profile.objects.create(username="bo")
    return (
        DeltaCrownWallet.objects.create(profile=ana),
        DeltaCrownWallet.objects.create(profile=bo),
        DeltaCrownWallet.objects.create(profile=None),
    )


def figures(wallet):
    wallet.refresh_from_db()
    if wallet.profile_id is None:
        return wallet.cached_balance, wallet.lifetime_earnings
    profile = Profile.objects.get(pk=wallet.profile_id)
    return (
        wallet.cached_balance,
        wallet.lifetime_earnings,
        profile.deltacoin_balance,
        profile.lifetime_earnings,
    )


def drift():
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM economy.balance_drift(attachment => 'esports')")
        return cur.fetchall()


def test_objects_create(economy):
    ana, _, _ = economy
    DeltaCrownTransaction.objects.create(wallet=ana, amount=100, reason="tournament_prize")
    DeltaCrownTransaction.objects.create(wallet=ana, amount=-30, reason="shop_purchase")
    assert figures(ana) == (70, 100, Decimal("70.00"), Decimal("100.00"))


def test_bulk_create_update_and_delete(economy):
    ana, bo, treasury = economy
    DeltaCrownTransaction.objects.bulk_create(
        [
            DeltaCrownTransaction(wallet=ana, amount=50, reason="reward"),
            DeltaCrownTransaction(wallet=bo, amount=20, reason="reward"),
            DeltaCrownTransaction(wallet=treasury, amount=5, reason="platform_fee"),
        ]
    )
    DeltaCrownTransaction.objects.filter(reason="reward").update(amount=F("amount") * 2)
    assert figures(ana) == (100, 100, Decimal("100.00"), Decimal("100.00"))
    DeltaCrownTransaction.objects.filter(wallet=bo).delete()
    assert figures(bo) == (0, 0, Decimal("0.00"), Decimal("0.00"))
    assert figures(treasury) == (5, 5)
    assert drift() == []


def wallet_rows_written():
    """Versions of wallet rows written in this transaction so far."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_stat_get_xact_tuples_updated(%s::regclass)",
            [DeltaCrownWallet._meta.db_table],
        )
        return cursor.fetchone()[0]


def test_bulk_create_needs_nothing_and_writes_each_wallet_once(economy):
    ana, bo, treasury = economy

    def rows(*pairs):
        return [
            DeltaCrownTransaction(wallet=wallet, amount=amount, reason="season_reward")
            for wallet, amount in pairs
        ]

    with transaction.atomic():
        before = wallet_rows_written()
        DeltaCrownTransaction.objects.bulk_create(
            rows((bo, 7), (ana, 10), (treasury, -2), (ana, 5), (bo, -1))
        )
        assert wallet_rows_written() - before == 3
    assert figures(ana) == (15, 15, Decimal("15.00"), Decimal("15.00"))
    assert figures(bo) == (6, 7, Decimal("6.00"), Decimal("7.00"))
    assert figures(treasury) == (-2, 0)
    with sync_by_statement():  # once needed for this; still works
        DeltaCrownTransaction.objects.bulk_create(rows((bo, 7), (ana, 10)))
    DeltaCrownTransaction.objects.create(wallet=ana, amount=1, reason="reward")  # one row
    assert figures(ana) == (26, 26, Decimal("26.00"), Decimal("26.00"))
    assert drift() == []


def test_a_stale_wallet_save_changes_no_cached_column(economy):
    ana, _, _ = economy
    stale = DeltaCrownWallet.objects.get(pk=ana.pk)
    DeltaCrownTransaction.objects.create(wallet=ana, amount=100, reason="tournament_prize")
    stale.is_deleted = True
    stale.cached_balance += 100  # the old `+=` code, on a stale object
    stale.save()
    assert figures(ana) == (100, 100, Decimal("100.00"), Decimal("100.00"))
    assert DeltaCrownWallet.objects.get(pk=ana.pk).is_deleted


def test_the_wallet_that_posted_sees_its_new_balance(economy):
    """The cached fields are forgotten after a save that may have changed them:
    the wallet a ledger row was given, and its profile, read them afresh."""
    ana, _, _ = economy
    assert ana.profile.deltacoin_balance == 0  # loaded, before the posting
    DeltaCrownTransaction.objects.create(wallet=ana, amount=30, reason="tournament_prize")
    assert (ana.cached_balance, ana.lifetime_earnings) == (30, 30)
    assert ana.profile.deltacoin_balance == Decimal("30.00")
    DeltaCrownTransaction.objects.create(wallet=ana, amount=-12, reason="shop_purchase")
    assert ana.cached_balance == 18  # an overdraft check in the app sees what the ledger says


def test_a_wallet_starts_at_its_ledgers_figures(economy):
    wallet = DeltaCrownWallet.objects.create(profile=None, cached_balance=500)
    assert wallet.cached_balance == 0
    assert DeltaCrownWallet.objects.get(pk=wallet.pk).cached_balance == 0


def test_an_explicit_write_of_a_cached_column_is_refused(economy):
    """A repair script's `.update()` or `bulk_update` cannot report success
    while changing nothing (guard 'refuse'): the database refuses it."""
    ana, _, _ = economy
    refused = r"belong to economy-sync.*attachment => 'esports'\), manage.py reconcile_economy"
    with pytest.raises(IntegrityError, match=refused), transaction.atomic():
        DeltaCrownWallet.objects.filter(pk=ana.pk).update(cached_balance=999)
    ana.cached_balance = 999
    with pytest.raises(IntegrityError, match="belong to economy-sync"), transaction.atomic():
        DeltaCrownWallet.objects.bulk_update([ana], ["cached_balance"])
    ana.refresh_from_db()
    assert figures(ana) == (0, 0, Decimal("0.00"), Decimal("0.00"))


def test_drift_behind_the_syncs_back_is_repaired_by_the_command(committed, economy):
    ana, _, treasury = economy
    DeltaCrownTransaction.objects.create(wallet=ana, amount=100, reason="tournament_prize")
    DeltaCrownTransaction.objects.create(wallet=treasury, amount=7, reason="platform_fee")
    with connection.cursor() as cur:  # a maintenance command that deleted a ledger row
        cur.execute("ALTER TABLE esports_deltacrowntransaction DISABLE TRIGGER USER")
        cur.execute("DELETE FROM esports_deltacrowntransaction WHERE reason = 'platform_fee'")
        cur.execute("ALTER TABLE esports_deltacrowntransaction ENABLE TRIGGER USER")
    assert len(drift()) == 2  # the treasury's balance and earnings
    dry = io.StringIO()
    with pytest.raises(CommandError) as drifted:
        call_command("reconcile_economy", stdout=dry)  # a dry run of every attachment
    assert drifted.value.returncode == 1
    assert "Balance to sync: 1" in dry.getvalue()
    repaired = io.StringIO()
    call_command("reconcile_economy", "--apply", "--all", stdout=repaired)
    assert "synced: 1" in repaired.getvalue()
    assert drift() == []
    assert figures(treasury) == (0, 0)


def test_the_economy_migration_is_reversible(committed, economy):
    DeltaCrownTransaction.objects.create(wallet=economy[0], amount=5, reason="reward")
    call_command("migrate", "esports", "0001", verbosity=0)
    with connection.cursor() as cur:
        cur.execute("SELECT to_regnamespace('economy') IS NULL")
        assert cur.fetchone() == (True,)
    DeltaCrownTransaction.objects.create(wallet=economy[0], amount=5, reason="reward")
    assert figures(economy[0])[0] == 5  # not synced any more
    call_command("migrate", "esports", verbosity=0)
    assert len(drift()) == 4  # attached again: the drift made meanwhile shows


def test_check_reports_a_switched_off_trigger_with_its_remedy(committed, economy):
    with connection.cursor() as cur:
        cur.execute("ALTER TABLE esports_deltacrowntransaction DISABLE TRIGGER USER")
    try:
        with pytest.raises(SystemCheckError, match=r"economy_sync\.E001.*ENABLE TRIGGER"):
            call_command("check", databases=["default"])
    finally:
        with connection.cursor() as cur:
            cur.execute("ALTER TABLE esports_deltacrowntransaction ENABLE TRIGGER USER")
    call_command("check", databases=["default"])


def test_check_warns_when_another_apps_command_shadows_reconcile_economy(monkeypatch):
    from economy_sync.django import checks

    monkeypatch.setattr(checks, "get_commands", lambda: {"reconcile_economy": "shop"})
    [warning] = checks.reconcile_command_is_the_packages(None)
    assert warning.id == "economy_sync.W001" and "shop" in warning.msg
    monkeypatch.undo()
    assert checks.reconcile_command_is_the_packages(None) == []


def test_economy_attach_writes_the_migration_the_models_say():
    """The command reads the mapping from the models (foreign keys, cached
    fields, and so guard 'refuse'): the same AttachEconomy as migration 0002,
    written by hand."""
    import importlib

    out = io.StringIO()
    call_command(
        "economy_attach", "esports", "--ledger", "esports.DeltaCrownTransaction",
        "--wallet", "esports.DeltaCrownWallet", "--profile", "esports.Profile",
        "--balance-after-field", "cached_balance_after", "--created-at-field", "created_at",
        "--kind-field", "reason", "--dry-run", stdout=out,
    )  # fmt: skip
    generated: dict = {}
    exec(out.getvalue(), generated)  # the migration file's text
    migration = generated["Migration"]("0004_economy_esports", "esports")
    assert migration.dependencies == [("esports", "0003_cached_fields")]
    [attach] = migration.operations  # 0002 installed the package already
    by_hand = importlib.import_module("esports.migrations.0002_economy").Migration
    assert attach.deconstruct() == by_hand.operations[1].deconstruct()


def test_switching_to_the_cached_fields_changes_nothing_in_the_database():
    out = io.StringIO()
    call_command("sqlmigrate", "esports", "0003", stdout=out)
    statements = [line for line in out.getvalue().splitlines() if not line.startswith("--")]
    assert statements == ["BEGIN;", "COMMIT;"], out.getvalue()


def test_a_bulk_load_with_the_sync_off_ends_repaired(economy):
    """Django's deferred foreign keys and all; the caches right after it."""
    ana, bo, _ = economy
    with loading_without_sync(DeltaCrownTransaction):
        DeltaCrownTransaction.objects.bulk_create(
            DeltaCrownTransaction(wallet=wallet, amount=amount, reason="import")
            for wallet, amount in [(ana, 5), (bo, 2), (ana, -1)] * 100
        )
    assert figures(ana) == (400, 500, Decimal("400.00"), Decimal("500.00"))
    assert drift() == []
    DeltaCrownTransaction.objects.create(wallet=bo, amount=1, reason="reward")  # synced again
    assert figures(bo)[0] == 201


def test_the_packages_python_calls_on_djangos_connection(economy):
    ana, _, _ = economy
    DeltaCrownTransaction.objects.create(wallet=ana, amount=9, reason="reward")  # uncommitted
    conn = psycopg_connection()
    assert api.wallet_balance(conn, ana.pk, attachment="esports") == 9
    assert api.balance_drift(conn, attachment="esports") == []


def test_holds_on_pending_balance(economy):
    """Checkout sets coins aside, then captures them: the capture's debit is a
    DeltaCrownTransaction row like any other."""
    ana, _, _ = economy
    DeltaCrownTransaction.objects.create(wallet=ana, amount=50, reason="reward")
    conn = psycopg_connection()
    placed = api.hold(conn, ana.pk, Decimal(20), attachment="esports")
    ana.refresh_from_db()
    assert (ana.cached_balance, ana.pending_balance) == (50, 20)
    entry = api.capture_hold(conn, placed.id, Decimal(15), attachment="esports")
    debit = DeltaCrownTransaction.objects.get(pk=entry.id)
    assert (debit.amount, debit.reason, debit.cached_balance_after) == (-15, "purchase", 35)
    assert debit.created_at is not None
    ana.refresh_from_db()
    assert (ana.cached_balance, ana.pending_balance) == (35, 0)
    assert drift() == []
