"""Django's own test classes on the attached economy: a TestCase rolls back, a
TransactionTestCase commits and Django empties every table after it with one
TRUNCATE, which the attached ledger allows. Run by pytest-django and by
`manage.py test` alike."""

from decimal import Decimal

from django.db import connection
from django.test import TestCase, TransactionTestCase
from esports.models import DeltaCrownTransaction, DeltaCrownWallet, Profile


def pay_ana(amount: int) -> DeltaCrownWallet:
    ana = Profile.objects.create(username="ana")
    wallet = DeltaCrownWallet.objects.create(profile=ana)
    DeltaCrownTransaction.objects.create(wallet=wallet, amount=amount, reason="tournament_prize")
    wallet.refresh_from_db()
    return wallet


class InATransaction(TestCase):
    def test_a_prize_reaches_the_caches(self):
        wallet = pay_ana(40)
        self.assertEqual(wallet.cached_balance, 40)
        self.assertEqual(Profile.objects.get().deltacoin_balance, Decimal("40.00"))


class Committed(TransactionTestCase):
    def test_a_committed_prize_then_a_flush(self):
        self.assertEqual(DeltaCrownTransaction.objects.count(), 0)  # flushed before
        wallet = pay_ana(25)
        self.assertEqual(wallet.cached_balance, 25)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM economy.balance_drift(attachment => 'esports')")
            self.assertEqual(cursor.fetchone(), (0,))

    def test_again_on_empty_tables(self):
        self.assertEqual(Profile.objects.count(), 0)
        self.assertEqual(pay_ana(5).cached_balance, 5)
