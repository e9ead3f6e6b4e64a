from django.urls import path

from chat import views

app_name = "chat"
urlpatterns = [
    path("", views.chat_index, name="index"),
    path("new/", views.conversation_new, name="new"),
    path("conversations/", views.conversation_search, name="search"),
    path("<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("<int:conversation_id>/rename/", views.conversation_rename_view, name="rename"),
    path("<int:conversation_id>/delete/", views.conversation_delete_view, name="delete"),
    path("<int:conversation_id>/options/", views.conversation_options_view, name="options"),
    path("messages/<int:message_id>/", views.message_detail, name="message"),
    path("messages/<int:message_id>/feedback/", views.message_feedback, name="feedback"),
]
