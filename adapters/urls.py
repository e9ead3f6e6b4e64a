from django.urls import URLPattern, URLResolver

app_name = "adapters"
urlpatterns: list[URLPattern | URLResolver] = []
