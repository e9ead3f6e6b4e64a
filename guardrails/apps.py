from django.apps import AppConfig


class GuardrailsConfig(AppConfig):
    name = "guardrails"

    def ready(self) -> None:
        from guardrails import signals

        signals.connect()
