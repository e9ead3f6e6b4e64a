from django.apps import AppConfig


class AdaptersConfig(AppConfig):
    name = "adapters"

    def ready(self) -> None:
        from adapters import signals

        signals.connect()
