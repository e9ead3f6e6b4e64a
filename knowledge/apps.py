from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "knowledge"

    def ready(self) -> None:
        # Registers the Celery tasks in every process (web, worker, tests), so ``knowledge.queueing`` sends by
        # name through the registered task.
        from knowledge import tasks  # noqa: F401
