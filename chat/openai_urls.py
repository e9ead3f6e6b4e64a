from django.urls import URLPattern, URLResolver

app_name = "openai"
urlpatterns: list[URLPattern | URLResolver] = []
