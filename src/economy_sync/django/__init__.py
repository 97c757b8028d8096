"""economy-sync for Django (`pip install economy-sync[django]`).

Add "economy_sync.django" to INSTALLED_APPS for `manage.py reconcile_economy`,
and use the migration operations of economy_sync.django.operations in a
migration of your app: InstallEconomySync, then AttachEconomy naming your
models and fields.
"""
