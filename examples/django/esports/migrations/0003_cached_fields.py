"""The cached columns become economy-sync's fields: nothing changes in the
database, Django stops writing them."""

from django.db import migrations

import economy_sync.django.fields


class Migration(migrations.Migration):
    dependencies = [
        ("esports", "0002_economy"),
    ]

    operations = [
        migrations.AlterField(
            model_name="deltacrownwallet",
            name="cached_balance",
            field=economy_sync.django.fields.CachedIntegerField(),
        ),
        migrations.AlterField(
            model_name="deltacrownwallet",
            name="lifetime_earnings",
            field=economy_sync.django.fields.CachedIntegerField(),
        ),
        migrations.AlterField(
            model_name="deltacrownwallet",
            name="pending_balance",
            field=economy_sync.django.fields.CachedIntegerField(),
        ),
        migrations.AlterField(
            model_name="profile",
            name="deltacoin_balance",
            field=economy_sync.django.fields.CachedDecimalField(decimal_places=2, max_digits=10),
        ),
        migrations.AlterField(
            model_name="profile",
            name="lifetime_earnings",
            field=economy_sync.django.fields.CachedDecimalField(decimal_places=2, max_digits=10),
        ),
    ]
