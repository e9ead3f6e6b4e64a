from django.contrib import admin

from tenants.models import ApiKey, AuditEvent, Membership, Quota, Tenant


class UnscopedAdmin(admin.ModelAdmin):
    """Django's admin is for superusers: it reads through the explicit unscoped manager."""

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return self.model.unscoped.all()


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "status", "created_at")


@admin.register(Membership)
class MembershipAdmin(UnscopedAdmin):
    list_display = ("tenant", "user", "role")


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    list_display = ("tenant", "tokens_per_day", "tokens_per_month", "requests_per_minute")


@admin.register(ApiKey)
class ApiKeyAdmin(UnscopedAdmin):
    list_display = ("tenant", "name", "prefix", "role", "revoked_at", "expires_at", "last_used_at")
    readonly_fields = ("hashed_secret", "prefix")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ("created_at", "tenant", "actor_label", "action", "target_type", "target_id")

    def has_change_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request, obj=None):  # type: ignore[no-untyped-def]
        return False
