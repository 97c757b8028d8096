"""An esports platform's economy, as its ORM wrote it before economy-sync:
integer wallet caches, an ownerless treasury wallet that collects fees,
soft-deleted wallets, a ledger with a reason, and numeric(10, 2) profile
figures keyed by the profile's own id. Earnings are every credit."""

from django.db import models

from economy_sync.django.fields import CachedDecimalField, CachedIntegerField


class Profile(models.Model):
    username = models.CharField(max_length=50)
    # kept by economy-sync: Django never writes them (migration 0003)
    deltacoin_balance = CachedDecimalField(max_digits=10, decimal_places=2)
    lifetime_earnings = CachedDecimalField(max_digits=10, decimal_places=2)


class DeltaCrownWallet(models.Model):
    # NULL: the platform's treasury, which collects fees
    profile = models.ForeignKey(Profile, null=True, blank=True, on_delete=models.PROTECT)
    cached_balance = CachedIntegerField()
    lifetime_earnings = CachedIntegerField()
    # the sum of its holds (checkout sets coins aside, then captures them)
    pending_balance = CachedIntegerField()
    is_deleted = models.BooleanField(default=False)


class DeltaCrownTransaction(models.Model):
    wallet = models.ForeignKey(DeltaCrownWallet, on_delete=models.PROTECT)
    amount = models.IntegerField()
    reason = models.CharField(max_length=32)
    cached_balance_after = models.IntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
