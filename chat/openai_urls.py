"""/v1/: the OpenAI-compatible endpoints (see chat/openai_views.py)."""

from django.urls import URLPattern, URLResolver, path, re_path

from chat import openai_views

app_name = "openai"
urlpatterns: list[URLPattern | URLResolver] = [
    path("chat/completions", openai_views.chat_completions, name="chat-completions"),
    path("models", openai_views.models_list, name="models"),
    path("models/<path:model>", openai_views.model_detail, name="model"),
    path("embeddings", openai_views.embeddings, name="embeddings"),
    re_path(r"^(?P<rest>.*)$", openai_views.not_found),
]
