"""SCIM 2.0 (RFC 7643/7644) provisioning, Users and Groups, for one provider per bearer token.

Base URL ``/scim/v2/``; ``Authorization: Bearer scim_<prefix>_<secret>`` (issued in the console). A group's
``displayName`` is what the provider's group mappings match, so group changes move department memberships.
Deactivating a user (``active: false`` by PUT or PATCH, or DELETE) ends their sessions, revokes their API keys and
closes their sockets. Errors are SCIM error documents with a ``detail`` a person understands.
"""

from __future__ import annotations

import re
from typing import Any

from django.urls import reverse
from rest_framework import status as http
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.errors import ApplicationError, NotAuthenticated
from identity import selectors, services
from identity.errors import ScimError
from identity.models import DirectoryGroup, ExternalIdentity, IdentityProvider

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
MAX_PAGE = 200


class ScimJSONParser(JSONParser):
    media_type = "application/scim+json"


class ScimJSONRenderer(JSONRenderer):
    media_type = "application/scim+json"
    format = "scim"


class ScimPrincipal:
    is_authenticated = True
    is_anonymous = False
    is_staff = False
    pk = None

    def __init__(self, provider: IdentityProvider) -> None:
        self.provider = provider


class ScimTokenAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[ScimPrincipal, None]:
        header = get_authorization_header(request).split()
        if len(header) != 2 or header[0].lower() != b"bearer":
            raise NotAuthenticated("Send the provider's SCIM token as 'Authorization: Bearer <token>'.")
        provider = selectors.provider_for_scim_token(raw_token=header[1].decode("latin-1"))
        return ScimPrincipal(provider), None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="scim"'


def scim_error_response(exc: Exception, context: dict[str, Any]) -> Response | None:
    """The SCIM door's error translator."""
    from rest_framework.exceptions import APIException

    if isinstance(exc, ScimError):
        status, detail, scim_type = exc.status, exc.message, exc.scim_type
    elif isinstance(exc, ApplicationError):
        status, detail = exc.status, exc.message
        scim_type = "uniqueness" if exc.code == "uniqueness" else ("invalidValue" if status == 400 else "")
    elif isinstance(exc, APIException):
        status, detail, scim_type = exc.status_code, str(exc.detail), ""
        if status == 400:
            scim_type = "invalidSyntax"
    else:
        return None
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    response = Response(body, status=status)
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="scim"'
    return response


class ScimView(APIView):
    authentication_classes = [ScimTokenAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [ScimJSONParser, JSONParser]
    renderer_classes = [ScimJSONRenderer, JSONRenderer]
    throttle_classes: list[Any] = []
    schema = None  # SCIM's own schema documents (RFC 7643) describe it, not the portal's OpenAPI

    def get_exception_handler(self) -> Any:
        return scim_error_response

    def provider(self, request: Request) -> IdentityProvider:
        return request.user.provider  # type: ignore[union-attr]

    def body(self, request: Request) -> dict[str, Any]:
        if not isinstance(request.data, dict):
            raise ScimError("The body is a JSON object.", scim_type="invalidSyntax")
        return request.data


# ------------------------------------------------------------------------------------------------ representation
def _location(request: Request, name: str, scim_id: Any) -> str:
    return request.build_absolute_uri(reverse(name, args=[str(scim_id)]))


def user_resource(request: Request, identity: ExternalIdentity) -> dict[str, Any]:
    user = identity.user
    resource: dict[str, Any] = {
        "schemas": [USER_SCHEMA],
        "id": str(identity.scim_id),
        "userName": identity.scim_user_name or user.get_username(),
        "name": {"givenName": user.first_name, "familyName": user.last_name},
        "displayName": (f"{user.first_name} {user.last_name}".strip() or user.get_username()),
        "active": bool(identity.active and user.is_active),
        "emails": [{"value": user.email, "type": "work", "primary": True}] if user.email else [],
        "groups": [
            {"value": str(g.scim_id), "display": g.display_name, "$ref": _location(request, "scim_group", g.scim_id)}
            for g in identity.directory_groups.all()
        ],
        "meta": {
            "resourceType": "User",
            "created": identity.created_at.isoformat(),
            "lastModified": identity.updated_at.isoformat(),
            "location": _location(request, "scim_user", identity.scim_id),
        },
    }
    if identity.external_id:
        resource["externalId"] = identity.external_id
    return resource


def group_resource(request: Request, group: DirectoryGroup) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "schemas": [GROUP_SCHEMA],
        "id": str(group.scim_id),
        "displayName": group.display_name,
        "members": [
            {
                "value": str(m.scim_id),
                "display": m.scim_user_name or m.user.get_username(),
                "$ref": _location(request, "scim_user", m.scim_id),
            }
            for m in group.members.select_related("user")
        ],
        "meta": {
            "resourceType": "Group",
            "created": group.created_at.isoformat(),
            "lastModified": group.updated_at.isoformat(),
            "location": _location(request, "scim_group", group.scim_id),
        },
    }
    if group.external_id:
        resource["externalId"] = group.external_id
    return resource


def _list(resources: list[dict[str, Any]], *, total: int, start: int) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


_FILTER = re.compile(r'^\s*(\w+)\s+eq\s+"((?:[^"\\]|\\.)*)"\s*$', re.IGNORECASE)


def _filter(request: Request, allowed: str) -> str | None:
    raw = request.query_params.get("filter")
    if not raw:
        return None
    match = _FILTER.match(raw)
    if not match or match.group(1).lower() != allowed.lower():
        raise ScimError(f'Only filter={allowed} eq "value" is supported.', scim_type="invalidFilter")
    return match.group(2).replace('\\"', '"')


def _paging(request: Request) -> tuple[int, int]:
    try:
        start = max(1, int(request.query_params.get("startIndex", 1)))
        count = min(MAX_PAGE, max(0, int(request.query_params.get("count", 100))))
    except ValueError:
        raise ScimError("startIndex and count are whole numbers.", scim_type="invalidValue") from None
    return start, count


def _bool(value: Any) -> bool:
    """SCIM clients send booleans, and some (Entra ID) the strings "True"/"False"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise ScimError("active is true or false.", scim_type="invalidValue")


def _user_fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if "userName" in data:
        fields["user_name"] = str(data["userName"] or "")
    if "externalId" in data:
        fields["external_id"] = str(data["externalId"] or "")
    name = data.get("name")
    if isinstance(name, dict):
        if "givenName" in name:
            fields["first_name"] = str(name.get("givenName") or "")
        if "familyName" in name:
            fields["last_name"] = str(name.get("familyName") or "")
    emails = data.get("emails")
    if isinstance(emails, list) and emails:
        primary = next((e for e in emails if isinstance(e, dict) and e.get("primary")), emails[0])
        if isinstance(primary, dict):
            fields["email"] = str(primary.get("value") or "")
    if "active" in data:
        fields["active"] = _bool(data["active"])
    return fields


# ------------------------------------------------------------------------------------------------ Users
class UsersView(ScimView):
    def get(self, request: Request) -> Response:
        provider = self.provider(request)
        user_name = _filter(request, "userName")
        start, count = _paging(request)
        qs = selectors.scim_user_list(provider=provider, user_name=user_name)
        total = qs.count()
        page = list(qs[start - 1 : start - 1 + count])
        return Response(_list([user_resource(request, i) for i in page], total=total, start=start))

    def post(self, request: Request) -> Response:
        fields = _user_fields(self.body(request))
        if not fields.get("user_name"):
            raise ScimError("userName is required.", scim_type="invalidValue")
        identity = services.scim_user_create(provider=self.provider(request), **fields)
        return Response(user_resource(request, identity), status=http.HTTP_201_CREATED)


class UserView(ScimView):
    def get(self, request: Request, scim_id: str) -> Response:
        identity = selectors.identity_get_scim(provider=self.provider(request), scim_id=scim_id)
        return Response(user_resource(request, identity))

    def put(self, request: Request, scim_id: str) -> Response:
        identity = selectors.identity_get_scim(provider=self.provider(request), scim_id=scim_id)
        fields = _user_fields(self.body(request))
        fields.setdefault("active", True)
        identity = services.scim_user_update(identity=identity, **fields)
        return Response(user_resource(request, identity))

    def patch(self, request: Request, scim_id: str) -> Response:
        identity = selectors.identity_get_scim(provider=self.provider(request), scim_id=scim_id)
        fields: dict[str, Any] = {}
        for op in _operations(self.body(request)):
            kind, path, value = op
            if kind not in {"add", "replace"}:
                raise ScimError("Users accept add and replace operations.", scim_type="invalidValue")
            if path is None:
                if not isinstance(value, dict):
                    raise ScimError("An operation without a path needs an object value.", scim_type="invalidValue")
                fields |= _user_fields(value)
            else:
                fields |= _user_fields(_path_to_object(path, value))
        identity = services.scim_user_update(identity=identity, **fields)
        return Response(user_resource(request, identity))

    def delete(self, request: Request, scim_id: str) -> Response:
        identity = selectors.identity_get_scim(provider=self.provider(request), scim_id=scim_id)
        services.scim_user_delete(identity=identity)
        return Response(status=http.HTTP_204_NO_CONTENT)


def _operations(body: dict[str, Any]) -> list[tuple[str, str | None, Any]]:
    ops = body.get("Operations")
    if not isinstance(ops, list) or not ops:
        raise ScimError("A PATCH carries a list of Operations.", scim_type="invalidSyntax")
    parsed = []
    for op in ops:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise ScimError("Each operation has an op (add, remove or replace).", scim_type="invalidSyntax")
        path = op.get("path")
        parsed.append((op["op"].lower(), str(path) if path is not None else None, op.get("value")))
    return parsed


def _path_to_object(path: str, value: Any) -> dict[str, Any]:
    """``name.givenName`` → {"name": {"givenName": v}}; ``emails[type eq "work"].value`` → a primary email."""
    if path.startswith("emails"):
        return {"emails": [{"value": value, "primary": True}]}
    head, _, tail = path.partition(".")
    if tail:
        return {head: {tail: value}}
    return {head: value}


# ------------------------------------------------------------------------------------------------ Groups
def _member_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        value = [value]
    ids = []
    for item in value:
        if isinstance(item, dict) and "value" in item:
            ids.append(str(item["value"]))
        else:
            raise ScimError('Members are given as [{"value": "<user id>"}].', scim_type="invalidValue")
    return ids


_MEMBER_PATH = re.compile(r'^members\[\s*value\s+eq\s+"([^"]+)"\s*\]$', re.IGNORECASE)


class GroupsView(ScimView):
    def get(self, request: Request) -> Response:
        provider = self.provider(request)
        name = _filter(request, "displayName")
        start, count = _paging(request)
        qs = selectors.directory_group_list(provider=provider, display_name=name)
        total = qs.count()
        page = list(qs[start - 1 : start - 1 + count])
        return Response(_list([group_resource(request, g) for g in page], total=total, start=start))

    def post(self, request: Request) -> Response:
        data = self.body(request)
        group = services.scim_group_create(
            provider=self.provider(request),
            display_name=str(data.get("displayName") or ""),
            external_id=str(data.get("externalId") or ""),
            member_ids=_member_ids(data.get("members")),
        )
        return Response(group_resource(request, group), status=http.HTTP_201_CREATED)


class GroupView(ScimView):
    def get(self, request: Request, scim_id: str) -> Response:
        group = selectors.directory_group_get(provider=self.provider(request), scim_id=scim_id)
        return Response(group_resource(request, group))

    def put(self, request: Request, scim_id: str) -> Response:
        group = selectors.directory_group_get(provider=self.provider(request), scim_id=scim_id)
        data = self.body(request)
        group = services.scim_group_update(
            group=group,
            display_name=str(data["displayName"]) if data.get("displayName") else None,
            replace_ids=_member_ids(data.get("members")),
        )
        return Response(group_resource(request, group))

    def patch(self, request: Request, scim_id: str) -> Response:
        group = selectors.directory_group_get(provider=self.provider(request), scim_id=scim_id)
        add: list[str] = []
        remove: list[str] = []
        replace: list[str] | None = None
        display_name: str | None = None
        for kind, path, value in _operations(self.body(request)):
            lowered = (path or "").lower()
            member_match = _MEMBER_PATH.match(path or "")
            if kind == "add" and lowered == "members":
                add += _member_ids(value)
            elif kind == "remove" and member_match:
                remove.append(member_match.group(1))
            elif kind == "remove" and lowered == "members":
                if value is None:
                    replace = []
                else:
                    remove += _member_ids(value)
            elif kind == "replace" and lowered == "members":
                replace = _member_ids(value)
            elif kind == "replace" and lowered == "displayname":
                display_name = str(value or "")
            elif kind in {"replace", "add"} and path is None and isinstance(value, dict):
                if "displayName" in value:
                    display_name = str(value["displayName"] or "")
                if "members" in value:
                    if kind == "replace":
                        replace = _member_ids(value["members"])
                    else:
                        add += _member_ids(value["members"])
            else:
                raise ScimError(f"Unsupported operation '{kind}' on '{path or ''}'.", scim_type="invalidPath")
        group = services.scim_group_update(
            group=group, display_name=display_name, add_ids=add, remove_ids=remove, replace_ids=replace
        )
        return Response(group_resource(request, group))

    def delete(self, request: Request, scim_id: str) -> Response:
        group = selectors.directory_group_get(provider=self.provider(request), scim_id=scim_id)
        services.scim_group_delete(group=group)
        return Response(status=http.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------------------------------------ discovery
class ServiceProviderConfigView(ScimView):
    def get(self, request: Request) -> Response:
        return Response(
            {
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
                "patch": {"supported": True},
                "bulk": {"supported": False, "maxOperations": 0, "maxPayloadSize": 0},
                "filter": {"supported": True, "maxResults": MAX_PAGE},
                "changePassword": {"supported": False},
                "sort": {"supported": False},
                "etag": {"supported": False},
                "authenticationSchemes": [
                    {
                        "type": "oauthbearertoken",
                        "name": "Bearer token",
                        "description": "The provider's SCIM token, issued in the portal's admin console.",
                        "primary": True,
                    }
                ],
            }
        )


class ResourceTypesView(ScimView):
    def get(self, request: Request) -> Response:
        types = [
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "User", "name": "User",
             "endpoint": "/Users", "schema": USER_SCHEMA},
            {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:ResourceType"], "id": "Group", "name": "Group",
             "endpoint": "/Groups", "schema": GROUP_SCHEMA},
        ]  # fmt: skip
        return Response(_list(types, total=len(types), start=1))
