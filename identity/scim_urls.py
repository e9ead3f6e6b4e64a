from django.urls import path

from identity import scim

urlpatterns = [
    path("ServiceProviderConfig", scim.ServiceProviderConfigView.as_view(), name="scim_config"),
    path("ResourceTypes", scim.ResourceTypesView.as_view(), name="scim_resource_types"),
    path("Users", scim.UsersView.as_view(), name="scim_users"),
    path("Users/<str:scim_id>", scim.UserView.as_view(), name="scim_user"),
    path("Groups", scim.GroupsView.as_view(), name="scim_groups"),
    path("Groups/<str:scim_id>", scim.GroupView.as_view(), name="scim_group"),
]
