"""SAML 2.0 service provider on pysaml2 (signatures checked by xmlsec1).

The portal sends an AuthnRequest over HTTP-Redirect and takes the Response on its assertion consumer service over
HTTP-POST. Accepted only: a Response to a request this browser started (``InResponseTo`` kept in its session, used
once), whose assertion is signed by the configured IdP certificate, names the portal in its audience, names the
ACS as recipient and destination, and is within its validity window. Each assertion id is accepted once.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from xml.sax.saxutils import quoteattr

from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.client import Saml2Client
from saml2.config import SPConfig
from saml2.metadata import entity_descriptor
from saml2.response import (
    IncorrectlySigned,
    InvalidAssertion,
    StatusError,
    UnsolicitedResponse,
    VerificationError,
)
from saml2.sigver import SignatureError
from saml2.validate import NotValid, ResponseLifetimeExceed, ToEarly

from identity.errors import SignInRefused

logger = logging.getLogger(__name__)

ACCEPTED_CLOCK_SKEW_S = 60


def xmlsec_binary() -> str:
    found = shutil.which("xmlsec1")
    if not found:
        raise SignInRefused(
            "SAML sign-in needs the xmlsec1 program on the server (Debian package xmlsec1).", code="saml_unavailable"
        )
    return found


def certificate_body(pem: str) -> str:
    """The base64 body of a PEM certificate (what SAML metadata carries)."""
    body = re.sub(r"-----(BEGIN|END) CERTIFICATE-----", "", pem)
    return "".join(body.split())


def idp_metadata_xml(*, entity_id: str, sso_url: str, certificate_pem: str) -> str:
    cert = certificate_body(certificate_pem)
    return (
        '<?xml version="1.0"?>'
        '<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" '
        'xmlns:ds="http://www.w3.org/2000/09/xmldsig#" '
        f"entityID={quoteattr(entity_id)}>"
        '<md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol" '
        'WantAuthnRequestsSigned="false">'
        '<md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>'
        f"{cert}"
        "</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
        f'<md:SingleSignOnService Binding="{BINDING_HTTP_REDIRECT}" Location={quoteattr(sso_url)}/>'
        "</md:IDPSSODescriptor></md:EntityDescriptor>"
    )


@dataclass(frozen=True)
class SamlEndpoints:
    entity_id: str  # the portal's SP entity id (its metadata URL)
    acs_url: str


def _config(*, idp_entity_id: str, idp_sso_url: str, idp_certificate: str, sp: SamlEndpoints) -> SPConfig:
    conf: dict[str, Any] = {
        "entityid": sp.entity_id,
        "xmlsec_binary": xmlsec_binary(),
        "allow_unknown_attributes": True,
        "accepted_time_diff": ACCEPTED_CLOCK_SKEW_S,
        "service": {
            "sp": {
                "endpoints": {"assertion_consumer_service": [(sp.acs_url, BINDING_HTTP_POST)]},
                "want_assertions_signed": True,
                "want_response_signed": False,
                "authn_requests_signed": False,
                "allow_unsolicited": False,
                "name_id_format_allow_create": True,
            }
        },
        "metadata": {
            "inline": [idp_metadata_xml(entity_id=idp_entity_id, sso_url=idp_sso_url, certificate_pem=idp_certificate)]
        },
    }
    config = SPConfig()
    config.load(conf)
    return config


def sp_metadata_xml(*, sp: SamlEndpoints, idp_entity_id: str, idp_sso_url: str, idp_certificate: str) -> str:
    config = _config(idp_entity_id=idp_entity_id, idp_sso_url=idp_sso_url, idp_certificate=idp_certificate, sp=sp)
    return str(entity_descriptor(config))


def authn_request_start(
    *, idp_entity_id: str, idp_sso_url: str, idp_certificate: str, sp: SamlEndpoints, relay_state: str
) -> tuple[str, str]:
    """(URL to send the browser to, the request id to keep in its session)."""
    client = Saml2Client(
        config=_config(idp_entity_id=idp_entity_id, idp_sso_url=idp_sso_url, idp_certificate=idp_certificate, sp=sp)
    )
    request_id, info = client.prepare_for_authenticate(
        entityid=idp_entity_id, relay_state=relay_state, binding=BINDING_HTTP_REDIRECT
    )
    location = dict(info["headers"])["Location"]
    return location, str(request_id)


def _root_attribute(saml_response: str, name: str) -> str:
    import base64
    import binascii

    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        root = ElementTree.fromstring(base64.b64decode(saml_response, validate=False))
    except (binascii.Error, ValueError, ElementTree.ParseError, DefusedXmlException):
        return ""
    return str(root.get(name, ""))[:500]


def in_response_to(saml_response: str) -> str:
    """The request id a base64 SAMLResponse answers ("" when unreadable); read before any check, to find the
    request in flight — the checks themselves are ``response_parse``'s."""
    return _root_attribute(saml_response, "InResponseTo")[:128]


@dataclass(frozen=True)
class SamlAssertion:
    name_id: str
    attributes: dict[str, list[str]]
    assertion_id: str
    issuer: str
    not_on_or_after: datetime | None


def _refused(code: str, message: str) -> SignInRefused:
    return SignInRefused(message, code=code)


def response_parse(
    *,
    idp_entity_id: str,
    idp_sso_url: str,
    idp_certificate: str,
    sp: SamlEndpoints,
    saml_response: str,
    outstanding: dict[str, str],
) -> SamlAssertion:
    """Verify a base64 SAMLResponse (HTTP-POST binding); refusals name the failed check."""
    destination = _root_attribute(saml_response, "Destination")
    if destination and destination != sp.acs_url:  # pysaml2 would only answer "no response" here
        raise _refused("saml_wrong_recipient", "The SAML response is addressed to a different URL.")
    client = Saml2Client(
        config=_config(idp_entity_id=idp_entity_id, idp_sso_url=idp_sso_url, idp_certificate=idp_certificate, sp=sp)
    )
    try:
        response = client.parse_authn_request_response(saml_response, BINDING_HTTP_POST, outstanding=outstanding)
    except UnsolicitedResponse:
        raise _refused(
            "saml_unsolicited",
            "This SAML response does not answer a sign-in started here, or it was already used. Sign in again.",
        ) from None
    except ResponseLifetimeExceed:
        raise _refused("saml_expired", "The SAML assertion has expired. Sign in again.") from None
    except ToEarly:
        raise _refused("saml_not_yet_valid", "The SAML assertion is not valid yet (check the IdP's clock).") from None
    except (SignatureError, IncorrectlySigned) as exc:
        missing = "missing" in str(exc).lower()
        raise _refused(
            "saml_unsigned" if missing else "saml_bad_signature",
            "The SAML assertion is not signed; signed assertions are required."
            if missing
            else "The SAML response's signature does not match the identity provider's certificate.",
        ) from None
    except StatusError:
        raise _refused("saml_idp_error", "The identity provider did not sign you in.") from None
    except (VerificationError, InvalidAssertion, NotValid) as exc:
        text = str(exc).lower()
        if "audience" in text:
            raise _refused("saml_wrong_audience", "The SAML assertion is meant for a different application.") from None
        if "recipient" in text or "destination" in text or "address" in text:
            raise _refused("saml_wrong_recipient", "The SAML response is addressed to a different URL.") from None
        raise _refused("saml_invalid", "The SAML response is not valid.") from None
    except Exception as exc:  # pysaml2 raises many kinds (XML parse errors, xmlsec failures, ...)
        text = str(exc).lower()
        logger.info("saml response refused", extra={"reason_class": type(exc).__name__})
        if "signature" in text or "signed" in text or "xmlsec" in text:
            raise _refused(
                "saml_bad_signature",
                "The SAML response's signature does not match the identity provider's certificate.",
            ) from None
        if "audience" in text:
            raise _refused("saml_wrong_audience", "The SAML assertion is meant for a different application.") from None
        raise _refused("saml_invalid", "The SAML response is not valid.") from None
    if response is None or response.assertion is None:
        raise _refused("saml_invalid", "The SAML response holds no assertion.")
    assertion = response.assertion
    if not getattr(assertion, "signature", None):
        # pysaml2 enforces this with want_assertions_signed; checked again so that a configuration slip cannot open it
        raise _refused("saml_unsigned", "The SAML assertion is not signed; signed assertions are required.")
    name_id = response.name_id.text if response.name_id is not None else ""
    if not name_id:
        raise _refused("saml_invalid", "The SAML assertion names no subject.")
    attributes = {str(k): [str(v) for v in vs] for k, vs in (response.ava or {}).items()}
    not_on_or_after: datetime | None = None
    try:
        conditions = assertion.conditions
        if conditions is not None and conditions.not_on_or_after:
            from saml2.time_util import str_to_time

            not_on_or_after = datetime(*str_to_time(conditions.not_on_or_after)[:6])
    except Exception:
        not_on_or_after = None
    issuer = assertion.issuer.text if assertion.issuer is not None else ""
    if issuer != idp_entity_id:
        raise _refused("saml_wrong_issuer", "The SAML assertion was issued by a different identity provider.")
    return SamlAssertion(
        name_id=name_id,
        attributes=attributes,
        assertion_id=str(assertion.id),
        issuer=issuer,
        not_on_or_after=not_on_or_after,
    )
