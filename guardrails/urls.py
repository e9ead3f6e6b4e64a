from django.urls import URLPattern, URLResolver, path

from guardrails import views

app_name = "guardrails"
urlpatterns: list[URLPattern | URLResolver] = [
    path("policy/", views.policy, name="policy"),
    path("policy/preview/", views.preview, name="preview"),
]
