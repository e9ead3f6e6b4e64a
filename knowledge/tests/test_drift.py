"""Embedding drift, with the real embedder, retrieval and PostgreSQL: searches leave projected samples (never text),
the scheduled check compares a window of queries with each knowledge base's chunks, and an off-topic query stream
moves every signal (centroid distance, PSI, weak support), flags the knowledge base, exports the gauges and is
charted in the console."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import floatformat
from django.urls import reverse
from django.utils import timezone

from core.metrics import DRIFT_CENTROID, DRIFT_PSI, DRIFT_WEAK_SUPPORT, RETRIEVAL_SEARCHES, metrics_refresh_state
from knowledge.drift import DIMENSIONS, drift_check_all, population_stability, project
from knowledge.models import DriftReport, QuerySample
from knowledge.selectors import chunk_search
from tenants.models import AuditEvent

pytestmark = pytest.mark.django_db

POLICIES = [
    ("Vacation", "Every employee receives 28 days of paid vacation per year; unused days expire at the end of March."),
    ("Sick leave", "Report sick leave to your manager before 9 a.m.; a doctor's note is needed from the third day."),
    ("Parental leave", "Parents may take up to 14 months of parental leave, split between both parents."),
    ("Remote work", "Employees may work from home up to three days per week after agreeing with their manager."),
    ("Working hours", "Core working hours are from 10 a.m. to 3 p.m.; overtime is recorded in the time sheet."),
    ("Train travel", "Business trips shorter than 600 kilometres are made by train in second class."),
    ("Flights", "Flights need the approval of a director and are booked in economy class."),
    ("Meal allowance", "The daily meal allowance on business trips is 42 euros within the country."),
    ("Hotels", "Hotels are booked through the travel desk; the nightly limit is 150 euros."),
    ("Expense reports", "Expense reports with receipts are submitted within 30 days after a business trip."),
    ("Company car", "Company cars are assigned to field sales staff; private use is taxed monthly."),
    ("Laptops", "Each employee gets a laptop that is replaced every four years by the IT department."),
    ("Passwords", "Passwords have at least 14 characters and are never shared; use the password manager."),
    ("VPN", "Connect through the company VPN when working outside the office network."),
    ("Phishing", "Report suspicious emails with the phishing button; never open unexpected attachments."),
    ("Onboarding", "New employees meet their mentor on the first day and complete safety training in week one."),
    ("Performance reviews", "Performance reviews take place every November with the direct manager."),
    ("Salary payment", "Salaries are paid on the last working day of each month by bank transfer."),
    ("Pension plan", "The company adds four percent of the salary to the employee pension plan."),
    ("Training budget", "Each employee has a yearly training budget of 1,500 euros for courses and books."),
    ("Office access", "Badges open the office from 6 a.m. to 10 p.m.; visitors register at the reception."),
    ("Parking", "Parking spaces in the garage are assigned by seniority and shared on remote days."),
    ("Canteen", "The canteen on the second floor serves lunch from 11:30 to 2 p.m. on working days."),
    ("Resignation", "The notice period for a resignation is three months to the end of a month."),
]
ON_TOPIC = [
    "How many vacation days do I get each year?",
    "When do unused vacation days expire?",
    "Do I need a doctor's note when I am sick?",
    "How long can parents take parental leave?",
    "How many days a week can I work from home?",
    "What are the core working hours?",
    "Should I take the train or fly for a 400 km business trip?",
    "Who approves business flights?",
    "What is the meal allowance on a business trip?",
    "What is the hotel limit per night?",
    "When must I submit my expense report?",
    "Who gets a company car?",
    "How often is my laptop replaced?",
    "How long must my password be?",
    "When should I use the VPN?",
    "What do I do with a phishing email?",
    "What happens on my first day as a new employee?",
    "When are performance reviews held?",
    "When is the salary paid?",
    "How much does the company pay into the pension plan?",
    "How large is my training budget?",
    "When is the office open with a badge?",
    "How are parking spaces assigned?",
    "When does the canteen serve lunch?",
    "What is the notice period if I resign?",
]
OFF_TOPIC = [
    "How long should I knead bread dough?",
    "Which team won the football world cup in 1998?",
    "How far away is the Andromeda galaxy?",
    "When should tomatoes be planted outdoors?",
    "What is a good recipe for lemon risotto?",
    "How do black holes evaporate?",
    "Who painted the ceiling of the Sistine Chapel?",
    "What is the offside rule in soccer?",
    "How do I tune a guitar to drop D?",
    "Why is the sky blue during the day?",
    "What do koalas eat in the wild?",
    "How many moons does Jupiter have?",
    "What is the best way to caramelize onions?",
    "Which wine goes well with grilled salmon?",
    "How do volcanoes form on the ocean floor?",
    "What are the rules of cricket?",
    "How do bees make honey?",
    "What is the tallest mountain in Africa?",
    "How do I prune a rose bush in winter?",
    "What causes the northern lights?",
    "How long do you boil an egg for a soft yolk?",
    "Which planet has the longest day?",
    "How fast can a cheetah run?",
    "What is the history of the Roman colosseum?",
    "How do I teach my dog to sit?",
]


@pytest.fixture
def handbook(world: Any) -> Any:
    from knowledge.models import Document
    from knowledge.services import document_ingest, document_upload, knowledge_base_create

    kb = knowledge_base_create(tenant=world.tenant, actor=world.admin, name="Handbook", chunk_size=64, chunk_overlap=0)
    text = "\n\n".join(f"# {title}\n\n{body}" for title, body in POLICIES)
    [result] = document_upload(knowledge_base=kb, actor=world.admin, files=[SimpleUploadedFile("hr.md", text.encode())])
    document_ingest(document_id=result.document.pk)
    assert Document.objects.for_tenant(world.tenant).get(pk=result.document.pk).status == "indexed"
    kb.refresh_from_db()
    assert kb.bm25_chunk_count >= 12, kb.bm25_chunk_count
    return kb


def _ask(world: Any, kb: Any, questions: list[str]) -> None:
    for question in questions:
        chunk_search(tenant=world.tenant, knowledge_base_ids=[kb.pk], query=question, k=4, role="member")


def _age(world: Any, hours: float) -> None:
    """Move every sample so far back in time (the next window holds only what is asked after)."""
    QuerySample.objects.for_tenant(world.tenant).update(created_at=timezone.now() - timedelta(hours=hours))


def test_searches_leave_projected_samples_and_count_weak_support(world, handbook):
    weak = RETRIEVAL_SEARCHES.labels(tenant="alpha", support="weak")._value.get()
    ok = RETRIEVAL_SEARCHES.labels(tenant="alpha", support="ok")._value.get()
    _ask(world, handbook, ["How many vacation days do I get each year?", "How do black holes evaporate?"])
    samples = list(QuerySample.objects.for_tenant(world.tenant).order_by("id"))
    assert len(samples) == 2
    on, off = samples
    assert on.knowledge_base_ids == [handbook.pk] and on.embedding_model == handbook.embedding_model
    assert len(on.projection) == DIMENSIONS and all(isinstance(x, float) for x in on.projection)
    assert on.best_similarity > settings.KNOWLEDGE_DRIFT_WEAK_SIMILARITY > off.best_similarity
    assert RETRIEVAL_SEARCHES.labels(tenant="alpha", support="ok")._value.get() == ok + 1
    assert RETRIEVAL_SEARCHES.labels(tenant="alpha", support="weak")._value.get() == weak + 1
    # no text is kept: the row's fields are numbers, the model's name and ids
    stored = " ".join(str(v) for v in QuerySample.objects.for_tenant(world.tenant).values().first().values())
    assert "vacation" not in stored and "black holes" not in stored


def test_no_samples_are_kept_when_sampling_is_off(world, handbook, settings):
    settings.KNOWLEDGE_DRIFT_SAMPLE = False
    _ask(world, handbook, ON_TOPIC[:3])
    assert not QuerySample.objects.for_tenant(world.tenant).exists()


def test_drift_an_off_topic_query_stream_moves_every_signal(world, handbook, client):
    _ask(world, handbook, ON_TOPIC)
    [steady] = drift_check_all()
    assert (steady.knowledge_base_id, steady.queries) == (handbook.pk, len(ON_TOPIC))
    assert steady.chunks == handbook.bm25_chunk_count and not steady.drifted

    _age(world, settings.KNOWLEDGE_DRIFT_WINDOW_HOURS + 1)  # the on-topic queries leave the window
    _ask(world, handbook, OFF_TOPIC)
    [shifted] = drift_check_all()
    assert shifted.queries == len(OFF_TOPIC)
    assert shifted.centroid_distance > steady.centroid_distance + 0.1
    assert shifted.psi > steady.psi
    assert shifted.weak_share > steady.weak_share
    assert shifted.weak_share > settings.KNOWLEDGE_DRIFT_WEAK_ALERT and shifted.drifted
    event = AuditEvent.objects.get(tenant=world.tenant, action="knowledge.drift")
    assert event.details["queries"] == len(OFF_TOPIC) and event.target_id == str(handbook.pk)

    metrics_refresh_state()
    labels = {"tenant": "alpha", "knowledge_base": str(handbook.pk)}
    assert DRIFT_PSI.labels(**labels)._value.get() == pytest.approx(shifted.psi)
    assert DRIFT_CENTROID.labels(**labels)._value.get() == pytest.approx(shifted.centroid_distance)
    assert DRIFT_WEAK_SUPPORT.labels(**labels)._value.get() == pytest.approx(shifted.weak_share)

    # a check while still drifted records no second audit event; old samples are deleted by retention
    _ask(world, handbook, OFF_TOPIC[:5])
    drift_check_all()
    assert AuditEvent.objects.filter(tenant=world.tenant, action="knowledge.drift").count() == 1
    _age(world, settings.KNOWLEDGE_DRIFT_RETENTION_HOURS + 1)
    assert drift_check_all() == []  # nothing left in the window
    assert not QuerySample.objects.for_tenant(world.tenant).exists()

    # the console charts it for the department's admins
    client.force_login(world.admin)
    page = client.get(reverse("console:drift")).content.decode()
    assert "Handbook" in page and floatformat(shifted.psi, 2) in page and "<svg" in page
    assert DriftReport.objects.for_tenant(world.tenant).count() == 3
    client.force_login(world.outsider)  # another department's admin sees none of it
    assert "Handbook" not in client.get(reverse("console:drift")).content.decode()
    assert client.get(reverse("console:drift") + f"?tenant={world.tenant.pk}").status_code == 404


def test_drift_needs_enough_queries(world, handbook):
    _ask(world, handbook, OFF_TOPIC[: settings.KNOWLEDGE_DRIFT_MIN_QUERIES - 1])
    assert drift_check_all() == []


def test_drift_statistics():
    rng = np.random.default_rng(1)
    reference = project(rng.standard_normal((400, 64)) + 2.0)
    same = project(rng.standard_normal((200, 64)) + 2.0)
    moved = project(rng.standard_normal((200, 64)) - 2.0)
    assert population_stability(same, reference) < 0.1 < 0.25 < population_stability(moved, reference)


def test_drift_check_is_scheduled():
    schedule = settings.CELERY_BEAT_SCHEDULE["knowledge.drift_check"]
    assert schedule["task"] == "knowledge.drift_check" and schedule["schedule"] == settings.KNOWLEDGE_DRIFT_INTERVAL
    from celery import current_app

    assert "knowledge.drift_check" in current_app.tasks
