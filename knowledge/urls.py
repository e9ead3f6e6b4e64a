from django.urls import path, register_converter

from knowledge import views


class IdConverter:
    """Digits within bigint range: a wild id is a 404, never a database error."""

    regex = "[0-9]{1,18}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)


register_converter(IdConverter, "kid")

app_name = "knowledge"
urlpatterns = [
    path("", views.kb_list, name="list"),
    path("create", views.kb_create, name="create"),
    path("<kid:kb_id>/", views.kb_detail, name="detail"),
    path("<kid:kb_id>/documents", views.kb_documents, name="documents"),
    path("<kid:kb_id>/upload", views.kb_upload, name="upload"),
    path("<kid:kb_id>/search", views.kb_search, name="search"),
    path("<kid:kb_id>/settings", views.kb_settings, name="settings"),
    path("<kid:kb_id>/delete", views.kb_delete, name="delete"),
    path("<kid:kb_id>/documents/<kid:doc_id>/", views.document_page, name="document"),
    path("<kid:kb_id>/documents/<kid:doc_id>/delete", views.document_delete, name="document_delete"),
    path("<kid:kb_id>/documents/<kid:doc_id>/reindex", views.document_reindex, name="document_reindex"),
    path("<kid:kb_id>/documents/<kid:doc_id>/cancel", views.document_cancel, name="document_cancel"),
]
