from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from core import metrics_views
from identity import views as identity_views
from portal import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", identity_views.login_view, name="login"),
    path("accounts/logout/", identity_views.logout_view, name="logout"),
    path("", include("identity.urls")),
    path("scim/v2/", include("identity.scim_urls")),
    path("accounts/password/", auth_views.PasswordChangeView.as_view(), name="password_change"),
    path("accounts/password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"),
    path("tenants/", include("tenants.urls")),
    path("chat/", include("chat.urls")),
    path("knowledge/", include("knowledge.urls")),
    path("console/", include("console.urls")),
    path("agents/", include("agents.urls")),
    path("adapters/", include("adapters.urls")),
    path("pool/", include("inference_pool.urls")),
    path("guardrails/", include("guardrails.urls")),
    path("api/", include("portal.api_urls")),
    path("v1/", include("chat.openai_urls")),
    # one sign-in door (TOTP and the password policy apply): the admin site's own login form is not used
    path("django-admin/login/", RedirectView.as_view(pattern_name="login", query_string=True)),
    path("django-admin/", admin.site.urls),
    path("metrics", metrics_views.metrics, name="metrics"),
]
