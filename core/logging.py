"""Structured JSON logs carrying request id, tenant id and user id (never message text, PII or secrets).

- :class:`RequestContextFilter` attaches ``request_id``, ``tenant_id``, ``user_id`` (set per request by
  ``core.middleware.RequestContextMiddleware``, ``tenants.middleware.CurrentTenantMiddleware`` and the API's
  authentication; per Celery task by ``core.observability``) and the OpenTelemetry ``trace_id`` when a span is active.
- :class:`RedactingFilter` is a safety net: it masks obvious secrets (tokens, keys, passwords, credentials in URLs)
  and PII patterns (e-mail addresses, card numbers, IBANs, SSNs, phone numbers) in the message, its arguments, extra
  fields and tracebacks. Code must still never log prompt text or PII on purpose.
- :class:`JsonFormatter` writes one JSON object per line (files, containers); :class:`TextFormatter` one readable
  line (``LOG_FORMAT=text``, and the ``make run`` supervisor's own terminal).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
tenant_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("tenant_id", default=None)
user_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("user_id", default=None)

# record attributes that are not payload: the stdlib's own, and uvicorn's ANSI-coloured copy of the message
_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime", "color_message"}
_CONTEXT_FIELDS = ("request_id", "tenant_id", "user_id", "trace_id")


class RequestContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.tenant_id = tenant_id_var.get()
        record.user_id = user_id_var.get()
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            record.trace_id = format(span_context.trace_id, "032x")
        return True


class ConnectionLogFilter(logging.Filter):
    """Drops the server's line per WebSocket handshake and per open/close (uvicorn and websockets write them at INFO
    on ``uvicorn.error``): access lines in all but name, off like the HTTP access log unless ``ACCESS_LOG`` is on."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not record.name.startswith("uvicorn"):
            return True
        msg = record.msg
        if not isinstance(msg, str):
            return True
        return not (msg in ("connection open", "connection closed") or msg.startswith('%s - "WebSocket %s" '))


# --- Redaction ------------------------------------------------------------------------------------------
def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1
    except ValueError:
        return False


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and _luhn_ok(digits) else match.group(0)


def _iban(match: re.Match[str]) -> str:
    return "[IBAN]" if _iban_ok(match.group(0)) else match.group(0)


_SECRET_WORDS = (
    r"password|passwd|pwd|passphrase|secret|secret[_-]?key|token|access[_-]?token|refresh[_-]?token|api[_-]?key"
    r"|apikey|access[_-]?key|private[_-]?key|client[_-]?secret|authorization|auth|credentials?|vault[_-]?key"
)
_SECRET_KEY_NAME = re.compile(rf"^(?:.*[_-])?(?:{_SECRET_WORDS})$", re.IGNORECASE)

_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
        "[PRIVATE_KEY]",
    ),
    # credentials inside URLs: scheme://user:password@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^@\s/]+)@"), r"\1:[REDACTED]@"),
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), r"\1 [REDACTED]"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}"), "[JWT]"),
    # the portal's own API keys keep their public prefix: ep_<prefix>_<secret>
    (re.compile(r"\b(ep_[0-9a-f]{12})_[A-Za-z0-9_-]{8,}"), r"\1_[REDACTED]"),
    (
        re.compile(
            r"\b(?:sk-[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}"
            r"|hf_[A-Za-z0-9]{30,}|glpat-[A-Za-z0-9_-]{20,})"
        ),
        "[SECRET]",
    ),
    # key=value / "key": "value" pairs whose key names a secret
    (
        re.compile(
            rf"(?i)(\b(?:[A-Za-z0-9]+[_-])*(?:{_SECRET_WORDS})\b[\"']?\s*[:=]\s*[\"']?)(?!\[|(?:bearer|basic|token)\s)([^\s\"'&,;}}]+)",
        ),
        r"\1[REDACTED]",
    ),
    (re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"), "[EMAIL]"),
    (re.compile(r"(?<![\w.-])(?:\d[ -]?){12,18}\d(?![\w.-])"), _card),
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), _iban),
    (re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), "[SSN]"),
    (re.compile(r"(?<![\w+])\+\d{1,3}[ -]?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]?\d{2,4}){1,3}(?![\w-])"), "[PHONE]"),
    (re.compile(r"(?<![\w-])(?:\(\d{3}\) ?|\d{3}[ -])\d{3}-\d{4}(?![\w-])"), "[PHONE]"),
]


def redact(text: str) -> str:
    """``text`` with obvious secrets and PII patterns replaced by ``[EMAIL]``, ``[REDACTED]``, ... placeholders."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact(value)
    if depth > 4 or isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {
            k: "[REDACTED]" if isinstance(k, str) and _SECRET_KEY_NAME.match(k) else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v, depth + 1) for v in value]
    return redact(str(value))


class RedactingFilter(logging.Filter):
    """Masks secrets and PII patterns in a record before any handler formats it (a safety net, not a licence)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep the template, drop the arguments
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        for key, value in list(vars(record).items()):
            if key in _RESERVED or key.startswith("_") or key in _CONTEXT_FIELDS:
                continue
            record.__dict__[key] = "[REDACTED]" if _SECRET_KEY_NAME.match(key) else _redact_value(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        record._redacted = True
        return True


# --- Formatters -----------------------------------------------------------------------------------------
def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info or record.exc_text:
            payload["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        if record.stack_info:
            payload["stack"] = record.stack_info
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    """``12:00:01 INFO  portal.x  message  [rid=… tenant=… user=…] key=value``: for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        context = " ".join(
            f"{name}={value}"
            for name, value in (
                ("rid", getattr(record, "request_id", "")),
                ("tenant", getattr(record, "tenant_id", None)),
                ("user", getattr(record, "user_id", None)),
            )
            if value not in ("", None)
        )
        extras = " ".join(
            f"{key}={value}"
            for key, value in vars(record).items()
            if key not in _RESERVED and not key.startswith("_") and key not in _CONTEXT_FIELDS
        )
        line = f"{clock} {record.levelname:<7} {record.name}  {record.getMessage()}"
        if context:
            line += f"  [{context}]"
        if extras:
            line += f"  {extras}"
        if record.exc_info or record.exc_text:
            line += "\n" + (record.exc_text or self.formatException(record.exc_info))  # type: ignore[arg-type]
        return line
