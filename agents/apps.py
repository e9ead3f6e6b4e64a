from django.apps import AppConfig


class AgentsConfig(AppConfig):
    name = "agents"

    def ready(self) -> None:
        # Registers the Celery tasks that ``agents.dispatch`` looks up by name, in every process (web and worker).
        # Imported here, not at module level, because task modules import models, which exist only once the app
        # registry is ready.
        from agents import tasks  # noqa: F401

        # A department's budget alerts (tenants.budget) go to its webhooks: tenants sits below agents, so it sends a
        # signal after the alert's commit and this app delivers it.
        from agents.webhooks import budget_alert_fanout
        from tenants.budget import budget_alert_raised

        budget_alert_raised.connect(
            lambda sender, alert, **_: budget_alert_fanout(alert=alert), weak=False, dispatch_uid="agents.budget"
        )
