"""Acceptance: each kind of user's journey in headless Chromium against the portal as ``make run`` starts it.

The journeys run in order on one portal and build on each other, as on a first day: the platform admin creates a
department and its people, the department's admin fills a knowledge base, an employee asks it questions, an
integration uses an API key with the official ``openai`` client, and the platform admin reads usage and the audit
log. Every page is watched (``conftest.Watch``): an asset or page answering 4xx/5xx, a console error or an uncaught
script exception fails the journey; the launcher's logs are checked for uncaught exceptions at the end.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from typing import Any

import pytest

from knowledge.tests.files import make_docx, make_pdf

pytestmark = [pytest.mark.browser, pytest.mark.engine, pytest.mark.slow, pytest.mark.timeout(900)]

TAG = os.environ.get("ACCEPTANCE_TAG") or secrets.token_hex(
    2
)  # names of this run (a portal reused while writing journeys keeps earlier runs' data)
DEPARTMENT = f"Research Lab {TAG}"
KB_NAME = f"Travel handbook {TAG}"
DANA, EVE = f"dana-{TAG}", f"eve-{TAG}"
HANDBOOK = (
    "# Zephyr travel handbook\n\n"
    "## Meals\n\n"
    "On business trips the daily meal allowance is 42 euros per day. Keep every receipt.\n\n"
    "## Trains\n\n"
    "Employees book trains for trips shorter than 600 kilometres; flights need a director's approval.\n"
)
QUESTION = "What is the daily meal allowance on business trips?"


def expect() -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect


def assert_styled(session: Any) -> None:
    """The stylesheet is applied (a computed style, not just a 200): the top bar is dark, the body has no margin."""
    page = session.page
    background = page.evaluate("getComputedStyle(document.querySelector('header.topbar')).backgroundColor")
    assert background == "rgb(17, 24, 39)", f"portal.css is not applied on {page.url}: top bar {background}"
    assert page.evaluate("getComputedStyle(document.body).marginTop") == "0px"


def assert_no_horizontal_overflow(session: Any) -> None:
    page = session.page
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{page.url} is {overflow} px wider than the {page.viewport_size['width']} px window"


def assert_says_department(session: Any) -> None:
    """The interface says "department"; "tenant" is the code's word (audit action codes like tenant.create aside)."""
    text = session.page.inner_text("body")
    words = [m.group(0) for m in re.finditer(r"\btenants?\b(?![.\w])", text, re.IGNORECASE)]
    assert not words, f"{session.page.url} says {words[0]!r}"


# --- platform admin, part 1: a department, its people, quotas, prices, a backend ------------------------------------
def test_platform_admin_sets_up_a_department(session_factory, portal):
    s = session_factory("platform-admin")
    page = s.page
    s.login(portal.admin_username, portal.admin_password)
    assert_styled(s)
    s.shot("home")

    s.goto("/console/tenants/")
    assert_styled(s)
    page.get_by_label("Name").fill(DEPARTMENT)
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/console/tenants/\d+/$"))
    page.wait_for_load_state("networkidle")
    expect()(page.locator("h1")).to_contain_text(DEPARTMENT)
    portal.state["department_url"] = page.url.removeprefix(portal.url)

    # quotas: a 1 MB upload limit (the department admin's oversize file is refused)
    quota = page.locator("#tenant-quota")
    quota.get_by_label("Max upload mb").fill("1")
    quota.get_by_label("Tokens per day").fill("2000000")
    with page.expect_response(lambda r: "/quota/" in r.url):
        quota.get_by_role("button", name="Save quotas").click()
    expect()(page.locator("#tenant-quota")).to_contain_text("Quotas saved.")

    # two people: the department's admin and an employee; each one-time password is shown once
    for username, role in ((DANA, "admin"), (EVE, "member")):
        form = page.locator("#tenant-members form", has_text="Create a user")
        form.get_by_label("Username").fill(username)
        form.get_by_label("Role").select_option(role)
        with page.expect_response(lambda r: "/members/create/" in r.url):
            form.get_by_role("button", name="Create with a one-time password").click()
        secret = page.get_by_test_id("one-time-password")
        expect()(secret).to_contain_text(username)
        portal.state[username] = secret.locator("p.mono").inner_text().strip()
    s.shot("department")
    assert_says_department(s)
    page.reload()
    page.wait_for_load_state("networkidle")
    expect()(page.get_by_test_id("one-time-password")).to_have_count(0)  # never shown again

    # prices
    s.goto("/console/prices/")
    page.get_by_label("Model or adapter").fill("smollm2-135m-instruct")
    page.get_by_label("Input per 1k").fill("0.0005")
    page.get_by_label("Output per 1k").fill("0.0015")
    with page.expect_response(lambda r: "/console/prices/set/" in r.url) as saved:
        page.get_by_role("button", name="Save price").click()
    assert saved.value.status == 200
    expect()(page.locator("#prices-table")).to_contain_text("smollm2-135m-instruct")
    s.shot("prices")

    # register a backend (the launcher's own engine, under a second name) on the pool page, at 1366 px
    s.goto("/console/pool/")
    form = page.locator("form", has=page.get_by_role("button", name="Add backend"))
    form.locator("input[name=name]").fill(f"lab-engine-{TAG}")
    form.locator("input[name=base_url]").fill(f"http://127.0.0.1:{portal.state['engine_port']}")
    models = form.locator("select[name=base_model] option")
    form.locator("select[name=base_model]").select_option(index=1 if models.count() > 1 else 0)
    form.locator("input[name=max_concurrent]").fill("2")
    form.get_by_role("button", name="Add backend").click()
    page.wait_for_url(re.compile(r"/console/pool/backends/\d+/$"))
    page.wait_for_load_state("networkidle")
    assert_styled(s)
    s.shot("backend")
    s.goto("/console/pool/")
    expect()(page.locator("body")).to_contain_text(f"lab-engine-{TAG}")
    assert_no_horizontal_overflow(s)
    assert_styled(s)
    s.shot("pool")


# --- department admin: a knowledge base, uploads, live progress, the guardrail policy ---------------------------
def test_department_admin_fills_a_knowledge_base(session_factory, portal, tmp_path):
    s = session_factory("department-admin")
    page = s.page
    s.login(DANA, portal.state[DANA])
    assert_styled(s)

    s.goto("/knowledge/")
    form = page.get_by_test_id("kb-create")
    form.get_by_label("Name").fill(KB_NAME)
    form.get_by_role("button", name="Create").click()
    page.wait_for_url(re.compile(r"/knowledge/[^/]+/$"))
    page.wait_for_load_state("networkidle")
    expect()(page.locator("h1")).to_have_text(KB_NAME)
    portal.state["kb_url"] = page.url.removeprefix(portal.url)

    files = {
        "zephyr-handbook.md": HANDBOOK.encode(),
        "expenses.pdf": make_pdf(["Expense reports are due within 30 days of the trip."]),
        "security.docx": make_docx([("Heading 1", "Badges"), ("Normal", "Visitors wear a red badge at all times.")]),
        "parking.html": b"<html><body><h1>Parking</h1><p>The garage closes at ten in the evening.</p></body></html>",
        "rates.csv": b"city,hotel rate\nParis,180\nBerlin,140\n",
        "notes.txt": b"The office is closed on the first Monday of May.",
    }
    paths = []
    for name, data in files.items():
        path = tmp_path / name
        path.write_bytes(data)
        paths.append(str(path))
    page.set_input_files("#upload-files", paths)
    documents = page.get_by_test_id("documents")
    for name in files:
        expect()(documents).to_contain_text(name)
    s.shot("uploading")

    # the same bytes again, under another name: a notice that outlives the list's refresh, no second row
    duplicate = tmp_path / "handbook-copy.md"
    duplicate.write_bytes(HANDBOOK.encode())
    page.set_input_files("#upload-files", str(duplicate))
    notice = page.get_by_test_id("upload-notice")
    expect()(notice).to_contain_text("Already in this knowledge base")
    page.wait_for_timeout(2500)  # the list refreshes every second while documents are indexed
    expect()(notice).to_contain_text("handbook-copy.md")
    expect()(documents).not_to_contain_text("handbook-copy.md")

    # two empty files: refused with a reason, each on its own row
    for name in ("empty.txt", "empty2.txt"):
        path = tmp_path / name
        path.write_bytes(b"")
        page.set_input_files("#upload-files", str(path))
        expect()(page.locator("#documents tr", has_text=name)).to_contain_text("The file is empty.")
    expect()(page.locator("#documents tr", has_text="empty")).to_have_count(2)
    # a file over the department's 1 MB limit is refused at once, without being sent
    huge = tmp_path / "huge.txt"
    huge.write_bytes(b"word " * 420_000)
    page.set_input_files("#upload-files", str(huge))
    expect()(page.get_by_test_id("upload-refused")).to_contain_text(
        "huge.txt is 2.0 MB; your department's limit is 1 MB per file."
    )
    expect()(documents).not_to_contain_text("huge.txt")

    # live progress to the end: every good file indexed, without reloading the page
    for name in files:
        row = page.locator("#documents tr", has_text=name)
        expect()(row.locator(".badge")).to_have_text("indexed", timeout=300_000)
    s.shot("indexed")
    assert_styled(s)

    # the guardrail policy, reached from the menu; its preview shows what would be masked
    page.get_by_role("link", name="Guardrails").first.click()
    page.wait_for_url(re.compile(r"/guardrails/policy/$"))
    page.wait_for_load_state("networkidle")
    policy = page.get_by_test_id("policy-form")
    strictness = policy.locator("select[name=injection_strictness]")
    options = strictness.locator("option").all_inner_texts()
    strictness.select_option(label=options[-1])
    with page.expect_navigation():
        policy.get_by_role("button", name="Save policy").click()
    page.wait_for_load_state("networkidle")
    preview = page.get_by_test_id("preview-form")
    preview.locator("textarea, input[type=text]").first.fill("Mail jane.doe@example.com about the Paris trip.")
    with page.expect_response(lambda r: "/guardrails/policy/preview/" in r.url):
        preview.get_by_role("button", name="Check").click()
    expect()(page.locator("#preview")).not_to_be_empty()
    expect()(page.locator("#preview")).not_to_contain_text("jane.doe@example.com")
    s.shot("guardrail-policy")
    assert_says_department(s)


# --- employee: a grounded chat, streamed and cited; stop, regenerate, feedback, reload, search --------------------
def test_employee_chats_with_the_knowledge_base(session_factory, portal):
    s = session_factory("employee")
    page = s.page
    s.login(EVE, portal.state[EVE])
    s.goto("/chat/")
    assert_styled(s)
    page.get_by_label(KB_NAME).check()
    page.get_by_test_id("start-chat").click()
    page.wait_for_url(re.compile(r"/chat/[^/]+/$"))
    page.wait_for_load_state("networkidle")
    expect()(page.locator("#chat")).to_have_attribute("data-socket", "open")
    expect()(page.get_by_test_id("stop")).to_be_hidden()  # nothing is streaming yet
    expect()(page.get_by_test_id("conversation-title")).to_have_text("New chat")

    page.get_by_test_id("composer-input").fill(QUESTION)
    page.get_by_test_id("send").click()
    expect()(page.get_by_test_id("stop")).to_be_visible()
    page.wait_for_function(
        "() => { const el = document.querySelector('.msg-assistant.streaming [data-testid=answer]');"
        " return el && el.textContent.replace('…', '').trim().length > 0; }",
        timeout=120_000,
    )
    answer = page.locator(".msg-assistant[data-status=complete]")
    expect()(answer).to_have_count(1, timeout=120_000)
    expect()(page.get_by_test_id("stop")).to_be_hidden()
    citation = answer.get_by_test_id("citation").first
    expect()(citation).to_be_visible()
    # the first question titles the conversation, and the header follows
    expect()(page.get_by_test_id("conversation-title")).not_to_have_text("New chat", timeout=10_000)
    s.shot("answer")

    # open a citation: the cited document's knowledge base, then back
    conversation = page.url
    citation.click()
    page.wait_for_load_state("networkidle")
    assert "/knowledge/" in page.url, page.url
    assert_styled(s)
    s.shot("citation")
    page.goto(conversation)
    page.wait_for_load_state("networkidle")
    expect()(page.locator("#chat")).to_have_attribute("data-socket", "open")

    # regenerate the answer: a new one replaces it, cited again
    page.get_by_test_id("regenerate").click()
    expect()(page.get_by_test_id("stop")).to_be_visible()
    expect()(page.locator(".msg-assistant")).to_have_count(1)
    expect()(page.locator(".msg-assistant").last).to_have_attribute("data-status", "complete", timeout=240_000)
    expect()(page.locator(".msg-assistant").last.get_by_test_id("citation").first).to_be_visible()
    assert page.locator(".msg-assistant").last.get_by_test_id("answer").inner_text().strip()

    # a question over the 4,000-character search limit (the composer allows 8,000) is searched with its first part
    # and answered; nothing is said about search
    long_question = ("Travel note. " * 400)[:3990] + "\n" + QUESTION
    assert 4000 < len(long_question) < 8000
    page.get_by_test_id("composer-input").fill(long_question)
    page.get_by_test_id("send").click()
    expect()(page.locator(".msg-assistant:not(.streaming)")).to_have_count(2, timeout=400_000)
    expect()(page.get_by_test_id("chat-alert")).to_be_hidden()
    # one too long for this small engine's window is refused in words a person understands; its bubble goes away
    # and the text comes back to the composer
    users = page.locator(".msg-user").count()
    too_long = ("Travel note. " * 600)[:7500] + "\n" + QUESTION
    page.get_by_test_id("composer-input").fill(too_long)
    page.get_by_test_id("send").click()
    expect()(page.get_by_test_id("chat-alert")).to_contain_text("too long", timeout=120_000)
    expect()(page.get_by_test_id("chat-alert")).not_to_contain_text("search")
    expect()(page.locator(".msg-user")).to_have_count(users)
    assert page.get_by_test_id("composer-input").input_value() == too_long
    page.get_by_test_id("composer-input").fill("")

    # stop while it writes
    # (about the documents: a question they do not support is answered at once, with nothing to stop)
    page.get_by_test_id("composer-input").fill(
        "Write a long story about the daily meal allowance on business trips and about booking trains."
    )
    page.get_by_test_id("send").click()
    page.wait_for_function(
        "() => { const el = document.querySelector('.msg-assistant.streaming [data-testid=answer]');"
        " return el && el.textContent.replace('…', '').trim().length > 20; }",
        timeout=120_000,
    )
    page.get_by_test_id("stop").click()
    expect()(page.get_by_test_id("status-badge").last).to_have_text("Stopped", timeout=30_000)
    expect()(page.get_by_test_id("stop")).to_be_hidden()
    expect()(page.locator(".msg-assistant").last).to_have_attribute("data-status", "stopped")

    # feedback
    first_answer = page.locator(".msg-assistant").first
    with page.expect_response(lambda r: "/feedback" in r.url):
        first_answer.get_by_test_id("thumbs-up").click()
    expect()(page.locator(".msg-assistant").first.get_by_test_id("thumbs-up")).to_have_attribute("aria-pressed", "true")
    s.shot("conversation")

    # reload: the conversation is intact, and nothing but the conversation is printed
    count = page.locator(".msg").count()
    page.reload()
    page.wait_for_load_state("networkidle")
    expect()(page.locator(".msg")).to_have_count(count)
    expect()(page.locator(".msg-assistant").first.get_by_test_id("thumbs-up")).to_have_attribute("aria-pressed", "true")
    expect()(page.locator(".msg-assistant").first.get_by_test_id("citation").first).to_be_visible()
    body = page.inner_text("body")
    assert "{'m':" not in body and "<Message" not in body
    expect()(page.locator("#flash")).to_be_empty()
    title = page.get_by_test_id("conversation-title").inner_text().strip()

    # search the history
    search = page.locator("#conversation-search")
    search.fill(title.split()[0])
    expect()(page.locator("#conversation-list")).to_contain_text(title)
    search.fill("zzqxj-nothing-like-this")
    expect()(page.locator("#conversation-list")).to_contain_text("No conversation matches")
    s.shot("history-search")
    assert_says_department(s)


# --- integration: an API key from the console, used by the official openai client -------------------------------
def test_integration_uses_an_api_key_with_the_openai_client(session_factory, portal):
    from openai import OpenAI

    s = session_factory("integration")
    page = s.page
    s.login(DANA, portal.state[DANA])
    s.goto("/console/")
    page.locator(".console-nav a", has_text=DEPARTMENT).click()
    page.wait_for_load_state("networkidle")
    keys = page.locator("#tenant-keys")
    keys.get_by_label("Name").fill("crm-bot")
    keys.get_by_label("Upload documents").check()
    with page.expect_response(lambda r: "/keys/create/" in r.url):
        keys.get_by_role("button", name="Create key").click()
    secret = page.get_by_test_id("new-key-secret").locator("p.mono").inner_text().strip()
    s.shot("api-key")

    client = OpenAI(base_url=f"{portal.url}/v1", api_key=secret, max_retries=0, timeout=180)
    models = [m.id for m in client.models.list()]
    assert models
    reply = client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Say hello."}], max_tokens=16
    )
    assert reply.choices[0].message.content
    assert reply.usage and reply.usage.completion_tokens > 0
    chunks = client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Count to three."}], max_tokens=16, stream=True
    )
    streamed = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
    assert streamed.strip()

    # REST uploads: an empty file is its own refused document; an oversize one is refused before its body is sent
    import httpx

    kb_id = portal.state["kb_url"].strip("/").split("/")[-1]
    documents = f"{portal.url}/api/v1/knowledge-bases/{kb_id}/documents/"
    auth = {"Authorization": f"Bearer {secret}"}
    created = httpx.post(documents, headers=auth, files={"files": ("empty3.txt", b"")}, timeout=60)
    assert created.status_code in (200, 201), created.text
    listed = httpx.get(documents, headers=auth, timeout=60).json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    empties = sorted(d["filename"] for d in rows if d["filename"].startswith("empty"))
    assert empties == ["empty.txt", "empty2.txt", "empty3.txt"], empties
    assert_refused_before_the_body(portal.url, f"/api/v1/knowledge-bases/{kb_id}/documents/", secret)


def assert_refused_before_the_body(base_url: str, path: str, secret: str) -> None:
    """Declare a 38 MB multipart body and send none of it: the answer (413, with the reason) comes at once."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    started = time.monotonic()
    connection.putrequest("POST", path)
    connection.putheader("Authorization", f"Bearer {secret}")
    connection.putheader("Content-Type", "multipart/form-data; boundary=xyz")
    connection.putheader("Content-Length", str(38 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    body = response.read().decode()
    connection.close()
    assert response.status == 413, (response.status, body)
    assert "limit is 1 MB per file" in body and time.monotonic() - started < 10


# --- platform admin, part 2: usage charts, CSV export, the audit log, the API docs --------------------------------
def test_platform_admin_reads_usage_and_the_audit_log(session_factory, portal):
    s = session_factory("platform-admin-reports")
    page = s.page
    s.login(portal.admin_username, portal.admin_password)
    deadline = time.monotonic() + 60
    while True:  # usage is recorded after each answer; the last ones may still be landing
        s.goto("/console/usage/")
        if DEPARTMENT in page.get_by_test_id("usage-breakdown").inner_text() or time.monotonic() > deadline:
            break
        page.wait_for_timeout(2000)
    assert page.locator(".charts figure svg").count() >= 2
    assert_styled(s)
    assert_says_department(s)
    s.shot("usage")
    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    csv_text = open(download.value.path(), encoding="utf-8").read()  # noqa: SIM115
    header, *rows = csv_text.strip().splitlines()
    assert "tokens" in header.lower() and rows
    assert any(DEPARTMENT in row or f"research-lab-{TAG}" in row for row in rows), csv_text[:500]

    s.goto("/console/audit/")
    table = page.locator("#audit-table")
    for action in ("tenant.create", "user.create", "knowledge.upload", "api_key"):
        expect()(table).to_contain_text(action)
    s.shot("audit")

    # the API reference works offline: Swagger UI from the portal's own static files
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    s.goto("/api/docs/")
    expect()(page.locator(".swagger-ui .info .title")).to_contain_text("Enterprise LLM Portal API", timeout=30_000)
    foreign = [u for u in requested if not u.startswith(portal.url) and not u.startswith("data:")]
    assert not foreign, f"the API docs fetched from outside the portal: {foreign}"
    s.shot("api-docs")
