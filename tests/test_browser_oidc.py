"""Single sign-on in a real browser: headless Debian Chromium (Playwright) signs in through the real OpenID
provider's login page (node-oidc-provider) to a live portal (uvicorn, test database), lands in the department its
group maps to with the mapped role, signs out of both, and loses the department once the group is removed."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from django.db import connections

from identity.services import group_mapping_set, provider_create
from tenants.models import Membership, Role
from tests.factories import TenantFactory
from tests.sso_providers import PORTAL_CLIENT_ID, PORTAL_CLIENT_SECRET

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


class PortalServer:
    """uvicorn serving portal.asgi (with static files) on a given port, in a thread of this process."""

    def __init__(self, port: int) -> None:
        import uvicorn
        from channels.routing import ProtocolTypeRouter
        from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

        from portal.asgi import application, django_asgi_app

        app = ProtocolTypeRouter(
            {
                "http": ASGIStaticFilesHandler(django_asgi_app),
                "websocket": application.application_mapping["websocket"],
            }
        )
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", ws="none")
        )
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()), daemon=True)

    def __enter__(self) -> PortalServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the live server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        connections.close_all()


def test_oidc_browser_sign_in_lands_in_the_mapped_department_and_follows_the_directory(oidc_provider, sso_portal_port):
    from playwright.sync_api import expect, sync_playwright

    finance = TenantFactory(slug="finance", name="Finance")
    legal = TenantFactory(slug="legal", name="Legal")
    company = provider_create(
        kind="oidc",
        name="Company",
        slug="company",
        issuer=oidc_provider.issuer,
        client_id=PORTAL_CLIENT_ID,
        client_secret=PORTAL_CLIENT_SECRET,
    )
    group_mapping_set(provider=company, group="fin-analysts", tenant=finance, role=Role.MEMBER)
    group_mapping_set(provider=company, group="legal", tenant=legal, role=Role.VIEWER)
    oidc_provider.person("zoe", groups=["fin-analysts"], email="zoe@corp.example")

    with PortalServer(sso_portal_port) as portal, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(30_000)

            def sign_in() -> None:
                page.goto(f"{portal.url}/accounts/login/")
                page.get_by_test_id("sso-company").click()
                page.wait_for_url(f"{oidc_provider.issuer}/interaction/**")
                page.fill("input[name=login]", "zoe")
                page.fill("input[name=password]", "correct horse battery staple")
                page.click("button[type=submit]")
                page.wait_for_url(f"{portal.url}/")

            sign_in()
            expect(page.locator("h1")).to_have_text("Welcome to Finance")
            expect(page.get_by_test_id("tenant-select")).to_contain_text("Finance (member)")
            expect(page.locator(".who .user")).to_have_text("zoe")

            # the directory moves her from finance to legal; she signs out of the portal and the provider
            oidc_provider.person("zoe", groups=["legal"], email="zoe@corp.example")
            page.get_by_role("button", name="Log out").click()
            expect(page.locator("h1")).to_have_text("You are signed out of the portal")
            page.get_by_test_id("provider-logout").click()
            page.wait_for_url(f"{oidc_provider.issuer}/session/end**")
            page.locator("button[autofocus], button[type=submit]").first.click()  # the provider's "Yes, sign me out"
            page.wait_for_url(f"{portal.url}/accounts/login/")

            sign_in()  # the provider asks for the login again: its session ended too
            expect(page.locator("h1")).to_have_text("Welcome to Legal")
            select = page.get_by_test_id("tenant-select")
            expect(select).to_contain_text("Legal (viewer)")
            expect(select).not_to_contain_text("Finance")
            response = page.goto(f"{portal.url}/chat/")
            assert response is not None and response.status == 200
        finally:
            browser.close()

    user = company.identities.get(subject="zoe").user
    assert {m.tenant_id: m.role for m in Membership.unscoped.filter(user=user)} == {legal.pk: Role.VIEWER}
