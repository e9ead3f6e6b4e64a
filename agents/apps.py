from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        # Registers the Celery tasks that ``agents.dispatch`` looks up by name, in every process (web and worker).
        # Imported here, not at module level, because task modules import models, which exist only once the app
        # registry is ready.
        from agents import tasks  # noqa: F401
