from django.urls import URLPattern, URLResolver

app_name = "inference_pool"
urlpatterns: list[URLPattern | URLResolver] = []
