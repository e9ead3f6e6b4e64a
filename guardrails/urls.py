from django.urls import URLPattern, URLResolver

app_name = "guardrails"
urlpatterns: list[URLPattern | URLResolver] = []
