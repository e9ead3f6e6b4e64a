from django.urls import URLPattern, URLResolver, path

from agents import views

app_name = "agents"
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.index, name="index"),
    path("new/", views.definition_new, name="definition_new"),
    path("<int:definition_id>/", views.definition_detail, name="definition_detail"),
    path("<int:definition_id>/edit/", views.definition_edit, name="definition_edit"),
    path("<int:definition_id>/archive/", views.definition_archive, name="definition_archive"),
    path("<int:definition_id>/run/", views.run_start, name="run_start"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>/live/", views.run_live, name="run_live"),
    path("runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("runs/<int:run_id>/approve/", views.run_approve, name="run_approve"),
    path("runs/<int:run_id>/reject/", views.run_reject, name="run_reject"),
    path("settings/", views.tool_settings, name="settings"),
    path("settings/rules/", views.rule_create, name="rule_create"),
    path("settings/rules/<int:rule_id>/delete/", views.rule_delete, name="rule_delete"),
    path("settings/secrets/", views.secret_set, name="secret_set"),
    path("settings/secrets/<int:secret_id>/delete/", views.secret_delete, name="secret_delete"),
    path("settings/webhooks/", views.webhook_create, name="webhook_create"),
    path("settings/webhooks/<int:endpoint_id>/delete/", views.webhook_delete, name="webhook_delete"),
]
