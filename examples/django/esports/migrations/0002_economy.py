"""Install economy-sync and attach it to the economy's tables."""

from django.db import migrations

from economy_sync.django.operations import AttachEconomy, InstallEconomySync


class Migration(migrations.Migration):
    dependencies = [("esports", "0001_initial")]

    operations = [
        InstallEconomySync(),
        AttachEconomy(
            "esports",
            ledger="esports.DeltaCrownTransaction",
            wallet="esports.DeltaCrownWallet",
            wallet_balance_field="cached_balance",
            wallet_earnings_field="lifetime_earnings",
            wallet_owner_field="profile",
            profile="esports.Profile",
            profile_balance_field="deltacoin_balance",
            profile_earnings_field="lifetime_earnings",
            earning="amount > 0",
            balance_after_field="cached_balance_after",
            created_at_field="created_at",
            # holds set coins aside in pending_balance; a capture's debit gets
            # its kind in `reason`
            held_field="pending_balance",
            kind_field="reason",
            # the cached fields are Django's CachedIntegerField / CachedDecimalField
            # (0003), which Django never writes: an explicit write is refused
            guard="refuse",
        ),
    ]
