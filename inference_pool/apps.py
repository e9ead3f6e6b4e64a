from django.apps import AppConfig


class InferencePoolConfig(AppConfig):
    name = "inference_pool"
