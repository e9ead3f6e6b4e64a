from django.urls import path

from identity import views

app_name = "identity"
urlpatterns = [
    path("accounts/mfa/", views.mfa_view, name="mfa"),
    path("accounts/mfa/setup/", views.mfa_setup_view, name="mfa_setup"),
    path("sso/oidc/<slug:slug>/login/", views.oidc_login, name="oidc_login"),
    path("sso/oidc/<slug:slug>/callback/", views.oidc_callback, name="oidc_callback"),
    path("sso/saml/<slug:slug>/login/", views.saml_login, name="saml_login"),
    path("sso/saml/<slug:slug>/acs/", views.saml_acs, name="saml_acs"),
    path("sso/saml/<slug:slug>/metadata/", views.saml_metadata, name="saml_metadata"),
]
