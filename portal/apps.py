from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self) -> None:
        from core.tracing import tracing_configure  # Django convention: set-up that runs once the apps are loaded

        tracing_configure()  # only when OTEL_EXPORTER_OTLP_ENDPOINT is set

        from django.core.checks import Tags, register

        from core.inline_middleware import middleware_check

        register(middleware_check, Tags.security, deploy=True)
