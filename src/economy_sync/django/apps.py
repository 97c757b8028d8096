from django.apps import AppConfig


class EconomySyncConfig(AppConfig):
    name = "economy_sync.django"
    label = "economy_sync"
    verbose_name = "economy-sync"
