from django.urls import path

from tenants import views

app_name = "tenants"
urlpatterns = [path("switch/", views.tenant_switch, name="switch")]
