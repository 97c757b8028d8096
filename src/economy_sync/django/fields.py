"""Model fields for the columns economy-sync keeps (a wallet's balance, a
profile's balance and earnings): Django never writes them and never holds on
to a stale value.

    from economy_sync.django.fields import CachedDecimalField, CachedIntegerField

    class Wallet(models.Model):
        cached_balance = CachedIntegerField()

- `save()` leaves the column as the database has it (it sets it to itself, so
  a stale instance cannot clobber it, whatever the attachment's guard); a new
  row starts at 0, as its empty ledger says.
- After a save, the instance forgets the value and reads it again on first
  use, and so does every instance a saved row refers to through a foreign
  key that Django holds (the wallet a `Transaction.objects.create(wallet=w)`
  was given, and that wallet's profile): `w.cached_balance` after posting is
  the new balance.
- An explicit write (`queryset.update(cached_balance=…)`, `bulk_update`) is
  the database's to refuse: attach with `guard => 'refuse'` and it raises.

Changing a model's field to one of these is a migration that changes nothing
in the database.
"""

from django.db import models
from django.db.models.signals import post_delete, post_save


class CachedField:
    """Mixed into a concrete field: see the module."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", 0)
        kwargs.setdefault("editable", False)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        for option, value in (("default", 0), ("editable", False)):
            if kwargs.get(option, object()) == value:
                del kwargs[option]  # ours, set by __init__
        return name, path, args, kwargs

    def pre_save(self, model_instance, add):
        if add:
            return 0  # a new row's ledger is empty (the guard sees to any other figure)
        return models.F(self.attname)  # an UPDATE keeps what the database has

    def contribute_to_class(self, cls, name, **kwargs):
        super().contribute_to_class(cls, name, **kwargs)
        if not cls._meta.abstract:
            post_save.connect(forget_cached_values, weak=False, dispatch_uid="economy_sync")
            post_delete.connect(forget_cached_values, weak=False, dispatch_uid="economy_sync")


class CachedIntegerField(CachedField, models.IntegerField):
    pass


class CachedBigIntegerField(CachedField, models.BigIntegerField):
    pass


class CachedDecimalField(CachedField, models.DecimalField):
    pass


def cached_fields(instance) -> list[str]:
    return [f.attname for f in instance._meta.concrete_fields if isinstance(f, CachedField)]


def forget(instance, depth: int = 2) -> None:
    """Drop the instance's cached values (read again on first use), then those
    of the instances its foreign keys hold, depth levels down."""
    for attname in cached_fields(instance):
        instance.__dict__.pop(attname, None)
    if depth:
        for related in instance._state.fields_cache.values():
            if isinstance(related, models.Model):
                forget(related, depth - 1)


def forget_cached_values(sender, instance, **kwargs) -> None:
    """After any model's save or delete: the rows the sync may have changed."""
    forget(instance)
