"""The tools an agent may call. Each has a JSON schema for its arguments, a permission check, a timeout and a flag
that says whether repeating it is safe (idempotent).

- ``knowledge_search``: hybrid search over the department's knowledge bases (the definition's, or all readable).
- ``read_document``: a document's text, page by page (``offset``), from its indexed chunks.
- ``http_request``: an HTTP call that must match the department's allowlist (method + URL prefix); headers come
  from stored secrets, the response is capped, redirects are not followed, every call carries an Idempotency-Key,
  and the egress guard (``core.egress``) refuses internal destinations and connects only to the address it checked.
- ``calculator``: arithmetic by walking the expression's syntax tree (no ``eval``), with bounds on size and powers.

A tool refuses with ``ToolError`` (a message for the model and the person); the run goes on and the model sees the
error. Guardrails (masking, injection checks) are applied around the tools by ``agents.runner``.
"""

from __future__ import annotations

import ast
import math
import operator
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.db import connection, transaction

from core.egress import EgressRefused, egress_client
from core.errors import PermissionDenied
from tenants.models import Role, Tenant, role_at_least

RESULT_CHARS = 6_000  # what a tool returns at most (the prompt takes less; see runner)


class ToolError(Exception):
    """The tool refused or failed; ``message`` is shown to the model and to people."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


@dataclass
class ToolContext:
    tenant: Tenant
    role: str
    run_id: int
    knowledge_base_ids: list[int] | None
    idempotency_key: str = ""
    cancelled: threading.Event | None = None


@dataclass
class ToolResult:
    text: str
    data: dict[str, Any] = field(default_factory=dict)
    truncated: bool = False
    # values the result must never show (secrets that a server might echo back)
    redact: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    min_role: str
    timeout_s: float
    arguments: Callable[[Tenant], dict[str, Any]]  # the JSON schema of the arguments (may depend on the tenant)
    example: str
    run: Callable[[ToolContext, dict[str, Any]], ToolResult]
    idempotent: Callable[[Tenant, dict[str, Any]], bool]
    available: Callable[[Tenant], bool] = lambda tenant: True

    def check_permission(self, role: str) -> None:
        if not role_at_least(role, self.min_role):
            raise PermissionDenied(f"The {self.name} tool needs the {self.min_role} role or higher.")


def _statement_timeout(seconds: float) -> None:
    with connection.cursor() as cur:
        cur.execute(f"SET LOCAL statement_timeout = {max(1, int(seconds * 1000))}")


def _clip(text: str, limit: int = RESULT_CHARS) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit] + " …", True


# --- knowledge_search -------------------------------------------------------------------------------------


def _search_schema(tenant: Tenant) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 2, "maxLength": 200}},
        "required": ["query"],
        "additionalProperties": False,
    }


def _search_run(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    from knowledge.selectors import chunk_search

    query = str(args.get("query") or "").strip()
    if len(query) < 2:
        raise ToolError("Give a search query of at least two characters.")
    with transaction.atomic():
        _statement_timeout(SEARCH.timeout_s)
        hits = chunk_search(
            tenant=ctx.tenant, knowledge_base_ids=ctx.knowledge_base_ids, query=query, k=4, role=ctx.role
        )
    if not hits:
        return ToolResult(text="No passages matched.", data={"hits": []})
    lines = []
    for n, hit in enumerate(hits, start=1):
        where = hit.document_name + (f", page {hit.page}" if hit.page else "")
        passage = " ".join(hit.text.split())
        if len(passage) > 700:
            passage = passage[:700] + " …"
        lines.append(f"[{n}] document {hit.document_id} ({where}): {passage}")
    text, truncated = _clip("\n".join(lines))
    data = {
        "hits": [
            {"document_id": h.document_id, "document_name": h.document_name, "chunk_id": h.chunk_id, "score": h.score}
            for h in hits
        ]
    }
    return ToolResult(text=text, data=data, truncated=truncated)


# --- read_document ----------------------------------------------------------------------------------------

READ_PAGE_CHARS = 3_000


def _read_schema(tenant: Tenant) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "document_id": {"type": "integer", "minimum": 1, "maximum": 999_999_999_999},
            "offset": {"type": "integer", "minimum": 0, "maximum": 100_000_000},
        },
        "required": ["document_id"],
        "additionalProperties": False,
    }


def _join_chunks(texts: list[str]) -> str:
    """The document's text from its chunks, dropping the overlap that neighbouring chunks share."""
    out = ""
    for text in texts:
        if not out:
            out = text
            continue
        window = min(len(out), len(text), 2_000)
        cut = 0
        for size in range(window, 19, -1):
            if out.endswith(text[:size]):
                cut = size
                break
        out = out + text[cut:] if cut else out + "\n" + text
    return out


def document_text(
    *, tenant: Tenant, role: str, knowledge_base_ids: list[int] | None, document_id: int
) -> tuple[str, str]:
    """(name, text) of an indexed document the role may read, within ``knowledge_base_ids`` when given."""
    from knowledge.models import Chunk, Document
    from knowledge.selectors import knowledge_base_list_readable

    readable = knowledge_base_list_readable(tenant=tenant, role=role)
    if knowledge_base_ids is not None:
        readable = readable.filter(pk__in=knowledge_base_ids)
    doc = (
        Document.objects.for_tenant(tenant)
        .filter(pk=document_id, knowledge_base_id__in=readable.values("pk"))
        .only("id", "filename", "status")
        .first()
    )
    if doc is None:
        raise ToolError(f"Document {document_id} was not found in the knowledge bases this agent may read.")
    texts = list(
        Chunk.objects.for_tenant(tenant).filter(document_id=doc.pk).order_by("ordinal").values_list("text", flat=True)
    )
    if not texts:
        raise ToolError(f"Document {document_id} has no indexed text yet (status: {doc.status}).")
    return doc.filename, _join_chunks(texts)


def _read_run(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    document_id = int(args["document_id"])
    offset = int(args.get("offset") or 0)
    with transaction.atomic():
        _statement_timeout(READ.timeout_s)
        name, text = document_text(
            tenant=ctx.tenant, role=ctx.role, knowledge_base_ids=ctx.knowledge_base_ids, document_id=document_id
        )
    if offset >= len(text) and offset > 0:
        raise ToolError(f"The offset {offset} is past the end of document {document_id} ({len(text)} characters).")
    page = text[offset : offset + READ_PAGE_CHARS]
    end = offset + len(page)
    more = end < len(text)
    header = f"Document {document_id} ({name}), characters {offset}–{end} of {len(text)}:"
    footer = f"\n(continues: read again with offset {end})" if more else "\n(end of document)"
    return ToolResult(
        text=f"{header}\n{page}{footer}",
        data={"document_id": document_id, "offset": offset, "end": end, "length": len(text)},
        truncated=more,
    )


# --- http_request -----------------------------------------------------------------------------------------

_URL_TAIL = "[A-Za-z0-9._~-]{1,40}(/[A-Za-z0-9._~-]{1,40}){0,3}"


def http_rules(tenant: Tenant) -> list[Any]:
    from agents.models import HttpToolRule

    return list(HttpToolRule.objects.for_tenant(tenant).order_by("name"))


def _http_schema(tenant: Tenant) -> dict[str, Any]:
    rules = http_rules(tenant)
    methods = sorted({r.method for r in rules}) or ["GET"]
    prefixes = sorted({r.url_prefix for r in rules})
    url: dict[str, Any] = {"type": "string", "maxLength": 400}
    if prefixes:
        # steer the model to the allowlisted prefixes (bounded tails so constrained decoding ends)
        alternatives = "|".join(
            re.escape(p) + (f"({_URL_TAIL})?" if p.endswith("/") else f"(/{_URL_TAIL})?") for p in prefixes
        )
        url = {"type": "string", "pattern": f"^({alternatives})$"}
    return {
        "type": "object",
        "properties": {
            "method": {"type": "string", "enum": methods},
            "url": url,
            "body": {"type": "string", "maxLength": 2_000},
        },
        "required": ["method", "url"],
        "additionalProperties": False,
    }


def normalize_url(raw: str) -> str:
    """A canonical absolute http(s) URL, or ToolError for anything that could slip past a prefix check."""
    raw = (raw or "").strip()
    if not raw or any(c.isspace() or ord(c) < 32 for c in raw) or "\\" in raw:
        raise ToolError("The URL is not valid.")
    parts = urlsplit(raw)
    if parts.scheme.lower() not in ("http", "https"):
        raise ToolError("Only http and https URLs are allowed.")
    if parts.username or parts.password or "@" in parts.netloc:
        raise ToolError("URLs with user names or passwords are not allowed.")
    if not parts.hostname:
        raise ToolError("The URL has no host.")
    path = parts.path or "/"
    lowered = path.lower()
    if "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        raise ToolError("Encoded dots or slashes are not allowed in the URL path.")
    if any(seg in (".", "..") for seg in path.split("/")):
        raise ToolError("'.' and '..' are not allowed in the URL path.")
    try:
        port = parts.port
    except ValueError:
        raise ToolError("The URL's port is not valid.") from None
    host = parts.hostname.lower().rstrip(".")
    default = {"http": 80, "https": 443}[parts.scheme.lower()]
    netloc = host if port in (None, default) else f"{host}:{port}"
    if ":" in host:  # IPv6 literal
        netloc = f"[{host}]" if port in (None, default) else f"[{host}]:{port}"
    return urlunsplit((parts.scheme.lower(), netloc, path, parts.query, ""))


def rule_matches(rule: Any, method: str, url: str) -> bool:
    """``url`` (normalized) is under the rule's prefix: a prefix ending in '/' covers what follows it; otherwise the
    prefix itself, its sub-paths and its query strings (``/api/orders`` covers ``/api/orders/7``, not
    ``/api/orders-admin``)."""
    if rule.method != method:
        return False
    prefix = normalize_url(rule.url_prefix)
    if prefix.endswith("/"):
        return url.startswith(prefix)
    return url == prefix or url.startswith(prefix + "/") or url.startswith(prefix + "?")


def http_rule_for(*, tenant: Tenant, method: str, url: str) -> Any:
    """The allowlist rule for this call (the longest matching prefix), or ToolError: refused."""
    method = (method or "").upper()
    normalized = normalize_url(url)
    matches = [r for r in http_rules(tenant) if rule_matches(r, method, normalized)]
    if not matches:
        raise ToolError(f"{method} {normalized} is not on the department's HTTP allowlist; the call was refused.")
    return max(matches, key=lambda r: len(r.url_prefix))


def _http_idempotent(tenant: Tenant, args: dict[str, Any]) -> bool:
    try:
        return bool(
            http_rule_for(tenant=tenant, method=str(args.get("method")), url=str(args.get("url"))).is_idempotent
        )
    except ToolError:
        return True  # refused calls do nothing: repeating the refusal is harmless


def _http_available(tenant: Tenant) -> bool:
    return bool(http_rules(tenant))


def _secret_headers(tenant: Tenant, rule: Any) -> tuple[dict[str, str], list[str]]:
    from agents.crypto import decrypt
    from agents.models import AgentSecret

    headers: dict[str, str] = {}
    values: list[str] = []
    wanted = dict(rule.header_secrets or {})
    if not wanted:
        return headers, values
    secrets = {s.name: s for s in AgentSecret.objects.for_tenant(tenant).filter(name__in=list(wanted.values()))}
    for header, secret_name in wanted.items():
        secret = secrets.get(secret_name)
        if secret is None:
            raise ToolError(f"The allowlist rule '{rule.name}' needs the secret '{secret_name}', which is not stored.")
        value = decrypt(secret.encrypted_value)
        headers[str(header)] = value
        values.append(value)
    return headers, values


def _http_run(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    import httpx

    method = str(args.get("method") or "GET").upper()
    url = normalize_url(str(args.get("url") or ""))
    rule = http_rule_for(tenant=ctx.tenant, method=method, url=url)
    headers, secret_values = _secret_headers(ctx.tenant, rule)
    headers.setdefault("User-Agent", "enterprise-portal-agent/1")
    if ctx.idempotency_key:
        headers["Idempotency-Key"] = ctx.idempotency_key
    body = args.get("body")
    content = str(body).encode() if body not in (None, "") and method not in ("GET", "HEAD") else None
    if content is not None:
        headers.setdefault("Content-Type", "application/json" if str(body).lstrip()[:1] in "{[" else "text/plain")
    cap = int(rule.max_response_bytes)
    timeout = float(rule.timeout_s)
    started = time.monotonic()
    received = bytearray()
    truncated = False
    try:
        with (
            egress_client(timeout=timeout) as client,
            client.stream(method, url, headers=headers, content=content) as response,
        ):
            for chunk in response.iter_bytes():
                if ctx.cancelled is not None and ctx.cancelled.is_set():
                    raise ToolError("The run was cancelled during the call.")
                if time.monotonic() - started > timeout:
                    raise ToolError(f"The call took longer than {timeout:g} seconds.")
                room = cap - len(received)
                if len(chunk) > room:
                    received += chunk[:room]
                    truncated = True
                    break
                received += chunk
            status = response.status_code
            reason = response.reason_phrase
            content_type = response.headers.get("content-type", "")
            location = response.headers.get("location", "")
    except EgressRefused as refused:
        raise ToolError(f"The call to {url} was refused: {refused.message}") from None
    except httpx.InvalidURL:
        raise ToolError("The URL is not valid.") from None
    except httpx.TimeoutException:
        raise ToolError(f"The call to {url} timed out after {timeout:g} seconds.") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"The call to {url} failed ({type(exc).__name__}).") from None
    text = received.decode("utf-8", errors="replace")
    head = f"HTTP {status} {reason}".strip()
    if content_type:
        head += f"\ncontent-type: {content_type}"
    if location and 300 <= status < 400:
        head += f"\nlocation: {location} (redirects are not followed)"
    if truncated:
        head += f"\n(the response was cut at {cap:,} bytes)"
    clipped, more = _clip(f"{head}\n\n{text}")
    return ToolResult(
        text=clipped,
        data={
            "rule": rule.name,
            "method": method,
            "url": url,
            "status": status,
            "bytes": len(received),
            "duration_ms": int((time.monotonic() - started) * 1000),
        },
        truncated=truncated or more,
        redact=secret_values,
    )


# --- calculator -------------------------------------------------------------------------------------------

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "sqrt": math.sqrt,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}
_MAX_MAGNITUDE = 1e300
_MAX_NODES = 200


def calculate(expression: str) -> int | float:
    """Evaluate arithmetic safely: numbers, + - * / // % **, parentheses, a few math functions and constants."""
    if len(expression) > 300:
        raise ToolError("The expression is too long (at most 300 characters).")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise ToolError(f"'{expression}' is not an arithmetic expression.") from None
    if sum(1 for _ in ast.walk(tree)) > _MAX_NODES:
        raise ToolError("The expression is too complex.")

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ToolError("Only numbers are allowed.")
        if (isinstance(value, float) and (math.isnan(value) or math.isinf(value))) or abs(value) > _MAX_MAGNITUDE:
            raise ToolError("The result is too large.")
        return value

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return check(node.value)
        if isinstance(node, ast.Name) and node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return check(_UNARY[type(node.op)](ev(node.operand)))
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and (abs(right) > 1000 or (abs(left) > 1e6 and abs(right) > 50)):
                raise ToolError("The power is too large.")
            try:
                return check(_BINARY[type(node.op)](left, right))
            except ZeroDivisionError:
                raise ToolError("Division by zero.") from None
            except OverflowError:
                raise ToolError("The result is too large.") from None
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
            and 1 <= len(node.args) <= 4
        ):
            values = [ev(a) for a in node.args]
            try:
                return check(_FUNCTIONS[node.func.id](*values))
            except (ValueError, TypeError, OverflowError):
                raise ToolError(f"{node.func.id}() cannot take those values.") from None
        raise ToolError("Only numbers, + - * / // % **, parentheses and functions like sqrt() are allowed.")

    result = ev(tree)
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        return int(result)
    return result


def _calc_schema(tenant: Tenant) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"expression": {"type": "string", "minLength": 1, "maxLength": 120}},
        "required": ["expression"],
        "additionalProperties": False,
    }


def _calc_run(ctx: ToolContext, args: dict[str, Any]) -> ToolResult:
    expression = str(args.get("expression") or "")
    value = calculate(expression)
    return ToolResult(text=f"{expression} = {value}", data={"value": value})


# --- registry ---------------------------------------------------------------------------------------------


def _always(tenant: Tenant, args: dict[str, Any]) -> bool:
    return True


SEARCH = Tool(
    name="knowledge_search",
    title="Search the knowledge bases",
    description="Search the department's documents; returns numbered passages with their document ids.",
    min_role=Role.VIEWER,
    timeout_s=20.0,
    arguments=_search_schema,
    example='{"query": "travel budget"}',
    run=_search_run,
    idempotent=_always,
)
READ = Tool(
    name="read_document",
    title="Read a document",
    description="Read a document's text by its id (from search results); long documents continue at an offset.",
    min_role=Role.VIEWER,
    timeout_s=20.0,
    arguments=_read_schema,
    example='{"document_id": 12}',
    run=_read_run,
    idempotent=_always,
)
HTTP = Tool(
    name="http_request",
    title="Call an allowed HTTP API",
    description="Call an HTTP API on the department's allowlist; returns the status and the (capped) response.",
    min_role=Role.MEMBER,
    timeout_s=30.0,
    arguments=_http_schema,
    example='{"method": "GET", "url": "https://crm.example.com/api/orders/42"}',
    run=_http_run,
    idempotent=_http_idempotent,
    available=_http_available,
)
CALCULATOR = Tool(
    name="calculator",
    title="Calculator",
    description="Evaluate an arithmetic expression exactly.",
    min_role=Role.VIEWER,
    timeout_s=2.0,
    arguments=_calc_schema,
    example='{"expression": "(1200 * 0.15) + 30"}',
    run=_calc_run,
    idempotent=_always,
)

TOOLS: dict[str, Tool] = {t.name: t for t in (SEARCH, READ, HTTP, CALCULATOR)}
TOOL_CHOICES = [(t.name, t.title) for t in TOOLS.values()]


def tool_get(name: str) -> Tool:
    try:
        return TOOLS[name]
    except KeyError:
        raise ToolError(f"There is no tool named '{name}'.") from None
