from django.urls import URLPattern, URLResolver, path

from console import views, views_adapters, views_identity, views_pool

app_name = "console"
urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.overview, name="overview"),
    # departments
    path("tenants/", views.tenant_list, name="tenant_list"),
    path("tenants/create/", views.tenant_create, name="tenant_create"),
    path("tenants/<int:tenant_id>/", views.tenant_detail, name="tenant_detail"),
    path("tenants/<int:tenant_id>/status/", views.tenant_status, name="tenant_status"),
    path("tenants/<int:tenant_id>/quota/", views.tenant_quota, name="tenant_quota"),
    path("tenants/<int:tenant_id>/members/add/", views.member_add, name="member_add"),
    path("tenants/<int:tenant_id>/members/create/", views.member_create, name="member_create"),
    path("tenants/<int:tenant_id>/members/<int:user_id>/role/", views.member_role, name="member_role"),
    path("tenants/<int:tenant_id>/members/<int:user_id>/remove/", views.member_remove, name="member_remove"),
    path("tenants/<int:tenant_id>/keys/create/", views.key_create, name="key_create"),
    path("tenants/<int:tenant_id>/keys/<int:key_id>/revoke/", views.key_revoke, name="key_revoke"),
    path("tenants/<int:tenant_id>/adapters/default/", views.tenant_adapter_default, name="tenant_adapter_default"),
    # adapters
    path("adapters/", views_adapters.adapter_list, name="adapter_list"),
    path("adapters/create/", views_adapters.adapter_create, name="adapter_create"),
    path("adapters/sync/", views_adapters.adapter_sync, name="adapter_sync"),
    path("adapters/<int:adapter_id>/", views_adapters.adapter_detail, name="adapter_detail"),
    path("adapters/<int:adapter_id>/edit/", views_adapters.adapter_edit, name="adapter_edit"),
    path("adapters/<int:adapter_id>/delete/", views_adapters.adapter_delete, name="adapter_delete"),
    path("adapters/<int:adapter_id>/locations/", views_adapters.adapter_locations, name="adapter_locations"),
    path("adapters/<int:adapter_id>/assign/", views_adapters.adapter_assign, name="adapter_assign"),
    path("adapters/<int:adapter_id>/unassign/", views_adapters.adapter_unassign, name="adapter_unassign"),
    path("adapters/<int:adapter_id>/load/", views_adapters.adapter_load, name="adapter_load"),
    path("adapters/<int:adapter_id>/unload/", views_adapters.adapter_unload, name="adapter_unload"),
    # the pool
    path("pool/", views_pool.pool, name="pool"),
    path("pool/backends/create/", views_pool.backend_create, name="backend_create"),
    path("pool/models/create/", views_pool.base_model_create, name="base_model_create"),
    path("pool/backends/<int:backend_id>/", views_pool.backend_detail, name="backend_detail"),
    path("pool/backends/<int:backend_id>/edit/", views_pool.backend_edit, name="backend_edit"),
    path("pool/backends/<int:backend_id>/state/", views_pool.backend_state, name="backend_state"),
    path("pool/backends/<int:backend_id>/confirm/", views_pool.backend_confirm_launch, name="backend_confirm"),
    path("pool/planner/", views_pool.planner, name="planner"),
    # usage, prices, audit
    path("usage/", views.usage, name="usage"),
    path("usage/export.csv", views.usage_csv, name="usage_csv"),
    path("prices/", views.prices, name="prices"),
    path("prices/set/", views.price_set, name="price_set"),
    path("prices/<int:price_id>/delete/", views.price_delete, name="price_delete"),
    path("audit/", views.audit, name="audit"),
    path("feedback/", views.feedback, name="feedback"),
    path("feedback/export.csv", views.feedback_csv, name="feedback_csv"),
    path("drift/", views.drift, name="drift"),
    # enterprise sign-in (identity providers, group mappings, SCIM tokens, password policy)
    path("identity/", views_identity.identity_overview, name="identity"),
    path("identity/providers/create/", views_identity.identity_provider_create, name="identity_provider_create"),
    path("identity/providers/<int:provider_id>/", views_identity.identity_provider, name="identity_provider"),
    path(
        "identity/providers/<int:provider_id>/edit/",
        views_identity.identity_provider_edit,
        name="identity_provider_edit",
    ),
    path(
        "identity/providers/<int:provider_id>/toggle/",
        views_identity.identity_provider_toggle,
        name="identity_provider_toggle",
    ),
    path(
        "identity/providers/<int:provider_id>/delete/",
        views_identity.identity_provider_delete,
        name="identity_provider_delete",
    ),
    path(
        "identity/providers/<int:provider_id>/mappings/add/",
        views_identity.identity_mapping_add,
        name="identity_mapping_add",
    ),
    path(
        "identity/providers/<int:provider_id>/mappings/<int:mapping_id>/remove/",
        views_identity.identity_mapping_remove,
        name="identity_mapping_remove",
    ),
    path(
        "identity/providers/<int:provider_id>/scim-token/",
        views_identity.identity_scim_token,
        name="identity_scim_token",
    ),
    path("identity/policy/", views_identity.identity_policy, name="identity_policy"),
    path("identity/break-glass/<int:user_id>/", views_identity.identity_break_glass, name="identity_break_glass"),
    path("identity/mfa-reset/<int:user_id>/", views_identity.identity_mfa_reset, name="identity_mfa_reset"),
]
