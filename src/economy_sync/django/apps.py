from django.apps import AppConfig


class EconomySyncConfig(AppConfig):
    name = "economy_sync.django"
    label = "economy_sync"
    verbose_name = "economy-sync"

    def ready(self):
        from economy_sync.django import checks  # noqa: F401  (registers them)
