from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Departments"

    def ready(self) -> None:
        from tenants import signals

        signals.connect()
