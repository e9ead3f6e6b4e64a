"""A guard that fails (exception or timeout) fails closed with a clear message; nothing passes unchecked."""

from __future__ import annotations

import time

import pytest

from core.errors import GuardrailBlocked, GuardrailUnavailable
from guardrails import injection
from guardrails.services import inspect_chunks, inspect_input, inspect_output, mask
from guardrails.tests.conftest import sample

pytestmark = pytest.mark.usefixtures("analyzer")


def _boom(*args, **kwargs):
    raise RuntimeError("spaCy exploded while reading: John Smith 4111 1111 1111 1111")


def _slow(*args, **kwargs):
    time.sleep(1.0)
    return []


CALLS = {
    "input": lambda t: inspect_input(tenant=t, text="What is the travel policy?"),
    "chunks": lambda t: inspect_chunks(tenant=t, texts=["A harmless passage."]),
    "mask": lambda t: mask(tenant=t, scope_key="conversation:1", text="Write to John Smith."),
    "output": lambda t: inspect_output(
        tenant=t, scope_key="conversation:1", text="Hello John Smith.", user_text="", canary="c", sources=[]
    ),
}


@pytest.mark.parametrize("stage", list(CALLS))
def test_an_exception_fails_closed(world, monkeypatch, caplog, stage):
    monkeypatch.setattr(injection, "detect_many", _boom)
    monkeypatch.setattr("guardrails.pii.PiiAnalyzer.analyze", _boom)
    before = sample("portal_guardrail_decisions_total", {"stage": stage, "decision": "unavailable"})
    with pytest.raises(GuardrailUnavailable) as err:
        CALLS[stage](world.tenant)
    assert isinstance(err.value, GuardrailBlocked)  # callers that stop on GuardrailBlocked stop on this too
    assert err.value.code == "guardrail_unavailable"
    assert err.value.status == 503
    assert "safety checks are unavailable" in err.value.message
    assert sample("portal_guardrail_decisions_total", {"stage": stage, "decision": "unavailable"}) - before == 1
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "RuntimeError" in logged
    assert "John Smith" not in logged and "4111" not in logged


@pytest.mark.parametrize("stage", ["input", "mask"])
def test_a_timeout_fails_closed(world, monkeypatch, settings, stage):
    settings.GUARDRAIL_TIMEOUT_S = 0.1
    monkeypatch.setattr(injection, "detect_many", _slow)
    monkeypatch.setattr("guardrails.pii.PiiAnalyzer.analyze", _slow)
    started = time.perf_counter()
    with pytest.raises(GuardrailUnavailable) as err:
        CALLS[stage](world.tenant)
    assert time.perf_counter() - started < 0.8
    assert err.value.details == {"stage": stage, "reason": "timeout"}


def test_a_missing_spacy_model_fails_closed(world, monkeypatch, settings):
    import guardrails.pii as pii

    monkeypatch.setattr(pii, "_analyzer", None)
    settings.SPACY_MODEL = "xx_no_such_pipeline"
    with pytest.raises(GuardrailUnavailable):
        mask(tenant=world.tenant, scope_key="conversation:1", text="Write to John Smith.")
    assert pii._analyzer is None
