"""The labeling web app through FastAPI's test client: login, labeling, roles, CSRF, escaping, bad input."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from rlhfkit.data.preferences import pair_to_trl
from rlhfkit.feedback import labeling
from rlhfkit.feedback.annotators import add_annotator, find_annotator
from rlhfkit.feedback.app import PAIRWISE_KEYS, create_app
from rlhfkit.feedback.export import live_labels, preference_pairs
from rlhfkit.feedback.items import add_comparisons, add_completions
from rlhfkit.feedback.store import FeedbackStore

HOSTILE = '<script>window.pwned = 1</script><img src=x onerror="alert(1)">'


@pytest.fixture
def store(tmp_path: Path) -> FeedbackStore:
    store = FeedbackStore.create(tmp_path / "app.sqlite", overlap=2, name="demo")
    add_comparisons(
        store,
        ["Summarize: #Person1# says hi & bye", "second prompt", "third prompt"],
        [[HOSTILE, "a friendly summary"], ["b1", "b2"], ["c1", "c2"]],
    )
    yield store
    store.close()


@pytest.fixture
def tokens(store: FeedbackStore) -> dict[str, str]:
    return {name: add_annotator(store, name, admin=name == "admin")[1] for name in ("alice", "bob", "admin")}


def forms(page: str) -> dict[str, dict[str, str]]:
    """Hidden inputs of each form on a page, by form id."""
    found = {}
    for form_id, body in re.findall(r'<form[^>]*\sid="([^"]+)"[^>]*>(.*?)</form>', page, re.DOTALL):
        found[form_id] = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', body))
    return found


def login(client: TestClient, token: str) -> str:
    page = client.get("/login").text
    response = client.post(
        "/login", data={"token": token, **forms(page)["login-form"]}, follow_redirects=False
    )
    assert response.status_code == 303, response.text
    label_page = client.get("/label")
    assert label_page.status_code == 200
    return label_page.text


def client_for(store: FeedbackStore) -> TestClient:
    return TestClient(create_app(store), base_url="http://127.0.0.1")


def submit(client: TestClient, page: str, **answer: str):
    return client.post("/label", data={**forms(page)["label-form"], **answer}, follow_redirects=False)


# ------------------------------------------------------------------------------------------- login


def test_login_sets_a_strict_httponly_session_cookie(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = client.get("/login")
    assert page.status_code == 200 and "Log in" in page.text
    response = client.post(
        "/login", data={"token": tokens["alice"], **forms(page.text)["login-form"]}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/label?notice=welcome"
    cookie = next(c for c in response.headers.get_list("set-cookie") if c.startswith("rlhfkit_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert tokens["alice"] not in cookie, "the session token is not the login token"


def test_wrong_token_and_missing_login_csrf(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = client.get("/login").text
    wrong = client.post("/login", data={"token": "not-a-token", **forms(page)["login-form"]})
    assert wrong.status_code == 401 and "Unknown token" in wrong.text
    fresh = client_for(store)  # no login-CSRF cookie
    refused = fresh.post(
        "/login", data={"token": tokens["alice"], "csrf_token": "guess"}, follow_redirects=False
    )
    assert refused.status_code == 403


def test_pages_need_a_session(store: FeedbackStore) -> None:
    client = client_for(store)
    assert client.get("/label", follow_redirects=False).headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    posted = client.post(
        "/label", data={"item_id": "1", "client_id": "abc", "csrf_token": "x", "choice": "tie"}
    )
    assert posted.status_code == 401
    assert client.get("/admin").status_code == 401
    assert client.get("/admin/export/pairs.jsonl").status_code == 401


def test_session_and_csrf_are_checked_before_the_other_fields(store: FeedbackStore, tokens: dict[str, str]) -> None:
    # One dependency (feedback.access.signed_in) runs before the route's fields are validated: a post that
    # is both unauthenticated (or forged) and malformed is refused for who sent it, not for what it holds.
    malformed = {"item_id": "abc", "client_id": "has spaces"}
    client = client_for(store)
    for path in ("/label", "/skip", "/undo"):
        assert client.post(path, data={**malformed, "csrf_token": "x"}).status_code == 401, path
    assert client.get("/admin/export/pairs.jsonl", params={"aggregate": "bogus"}).status_code == 401
    login(client, tokens["alice"])
    for path in ("/label", "/skip", "/undo"):
        assert client.post(path, data={**malformed, "csrf_token": "0" * 64}).status_code == 403, path
    assert client.get("/admin/export/pairs.jsonl", params={"aggregate": "bogus"}).status_code == 403
    assert client.post("/skip", data={"csrf_token": "0" * 64}).status_code == 403
    assert live_labels(store, include_skips=True) == []


def test_logout_ends_the_session(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    csrf = forms(page)["label-form"]["csrf_token"]
    assert client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert client.get("/label", follow_redirects=False).headers["location"] == "/login"


# ---------------------------------------------------------------------------------------- labeling


def test_label_page_shows_item_keys_and_progress(store: FeedbackStore, tokens: dict[str, str]) -> None:
    page = login(client_for(store), tokens["alice"])
    assert 'id="text-left"' in page and 'id="text-right"' in page
    assert "Summarize: #Person1# says hi &amp; bye" in page
    assert re.search(r'id="done-count">0<', page) and re.search(r'id="remaining-count">3<', page)
    for action, key, description in PAIRWISE_KEYS:
        assert html.escape(description) in page
        if action != "undo":  # the undo button appears once there is something to undo
            assert f'data-key="{key}"' in page
    assert "Shift+A" in page


def test_candidate_text_is_escaped_never_markup(store: FeedbackStore, tokens: dict[str, str]) -> None:
    page = login(client_for(store), tokens["alice"])
    assert "<script>window.pwned" not in page and "<img src=x" not in page
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;&lt;img src=x onerror=" in page
    assert re.findall(r"<script[^>]*>", page) == ['<script src="/static/label.js" defer>'], (
        "only our own script"
    )


def test_submission_is_stored_in_canonical_terms_with_the_layout(
    store: FeedbackStore, tokens: dict[str, str]
) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    item_id = int(forms(page)["label-form"]["item_id"])
    left_text = html.unescape(re.search(r'id="text-left">(.*?)</div>', page, re.DOTALL).group(1))
    response = submit(client, page, choice="left", strength="3", toxic_right="1", comment="  left wins  ")
    assert response.status_code == 303 and response.headers["location"] == "/label?notice=saved"
    (record,) = live_labels(store)
    first_is_left = record.candidates[0] == left_text
    assert record.item_id == item_id and record.first_on_left == first_is_left
    assert record.choice == ("first" if first_is_left else "second") and record.strength == 3
    assert record.toxic == ((False, True) if first_is_left else (True, False))
    assert record.comment == "left wins"
    (pair,) = preference_pairs(store)
    assert pair.chosen == left_text and pair.margin == 3.0
    after = client.get("/label?notice=saved").text
    assert (
        "Saved." in after
        and re.search(r'id="done-count">1<', after)
        and re.search(r'id="remaining-count">2<', after)
    )


def test_a_retried_post_is_stored_once(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    assert submit(client, page, choice="tie").status_code == 303
    assert submit(client, page, choice="tie").status_code == 303
    assert len(live_labels(store)) == 1


def test_csrf_is_required_on_every_post(store: FeedbackStore, tokens: dict[str, str]) -> None:
    alice, bob = client_for(store), client_for(store)
    page = login(alice, tokens["alice"])
    bob_page = login(bob, tokens["bob"])
    fields = forms(page)
    for path, data in (
        ("/label", {**fields["label-form"], "choice": "tie"}),
        ("/skip", fields["skip-form"]),
        ("/logout", {}),
    ):
        for bad in ("", "0" * 64, forms(bob_page)["label-form"]["csrf_token"]):
            response = alice.post(path, data={**data, "csrf_token": bad}, follow_redirects=False)
            assert response.status_code in (403, 422), (path, bad, response.status_code)
    assert live_labels(store, include_skips=True) == []


def test_missing_strength_reshows_the_item_with_the_answer_kept(
    store: FeedbackStore, tokens: dict[str, str]
) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    item_id = forms(page)["label-form"]["item_id"]
    response = submit(client, page, choice="right", comment="my note")
    assert response.status_code == 400 and "how much better" in response.text
    assert forms(response.text)["label-form"]["item_id"] == item_id
    assert re.search(r'value="right"\s+data-key="b" checked', response.text) and "my note" in response.text
    assert live_labels(store) == []


def test_a_retired_item_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    with FeedbackStore.create(tmp_path / "r.sqlite", overlap=1) as store:
        add_comparisons(store, ["only prompt"], [["x", "y"]])
        alice_token, bob_token = add_annotator(store, "alice")[1], add_annotator(store, "bob")[1]
        alice, bob = client_for(store), client_for(store)
        alice_page, bob_page = login(alice, alice_token), login(bob, bob_token)
        assert submit(alice, alice_page, choice="tie").status_code == 303
        late = submit(bob, bob_page, choice="tie")
        assert late.status_code == 409 and "retired" in late.text and "Nothing left for you" in late.text


def test_an_item_not_served_to_the_annotator_is_refused(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    served = forms(page)["label-form"]["item_id"]
    other = next(str(i) for i in (1, 2, 3) if str(i) != served)
    for path, data in (
        ("/label", {**forms(page)["label-form"], "item_id": other, "choice": "tie"}),
        ("/skip", {**forms(page)["skip-form"], "item_id": other}),
    ):
        refused = client.post(path, data=data)
        assert refused.status_code == 409 and f"item {other} was not served to you" in refused.text, path
        assert forms(refused.text)["label-form"]["item_id"] == served, (
            "the page shows the item that is theirs"
        )
    assert live_labels(store, include_skips=True) == []


def test_skipping_a_retired_item_is_refused(tmp_path: Path) -> None:
    with FeedbackStore.create(tmp_path / "r.sqlite", overlap=1) as store:
        add_comparisons(store, ["only prompt"], [["x", "y"]])
        alice_token, bob_token = add_annotator(store, "alice")[1], add_annotator(store, "bob")[1]
        alice, bob = client_for(store), client_for(store)
        alice_page, bob_page = login(alice, alice_token), login(bob, bob_token)
        assert submit(alice, alice_page, choice="tie").status_code == 303
        late = bob.post("/skip", data=forms(bob_page)["skip-form"])
        assert late.status_code == 409 and "retired" in late.text
        assert [r.annotator for r in live_labels(store, include_skips=True)] == ["alice"]


def test_skip_and_undo(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    skipped = forms(page)["skip-form"]["item_id"]
    response = client.post("/skip", data=forms(page)["skip-form"], follow_redirects=False)
    assert response.headers["location"] == "/label?notice=skipped"
    page = client.get("/label").text
    assert forms(page)["label-form"]["item_id"] != skipped and re.search(r'id="skipped-count">1<', page)
    labeled = forms(page)["label-form"]["item_id"]
    submit(client, page, choice="both_bad", toxic_left="1")
    page = client.get("/label").text
    response = client.post("/undo", data=forms(page)["undo-form"], follow_redirects=False)
    assert response.headers["location"] == "/label?notice=undone"
    page = client.get("/label?notice=undone").text
    assert forms(page)["label-form"]["item_id"] == labeled
    assert re.search(r'value="both_bad"\s+data-key="x" checked', page), "the undone answer is preselected"
    assert re.search(r'id="toxic-left"[^>]*checked', page)
    client.post("/undo", data=forms(page)["undo-form"])  # undo the skip as well
    assert live_labels(store, include_skips=True) == []
    page = client.get("/label").text
    assert 'id="undo-form"' not in page, "no undo button when there is nothing to undo"
    csrf = forms(page)["label-form"]["csrf_token"]
    nothing = client.post("/undo", data={"csrf_token": csrf, "client_id": "undo-when-empty"})
    assert nothing.status_code == 409 and "nothing to undo" in nothing.text


def test_everything_done_page(tmp_path: Path) -> None:
    with FeedbackStore.create(tmp_path / "d.sqlite", overlap=1) as store:
        add_comparisons(store, ["p"], [["x", "y"]])
        token = add_annotator(store, "alice")[1]
        client = client_for(store)
        page = login(client, token)
        submit(client, page, choice="left", strength="1")
        done = client.get("/label").text
        assert "Nothing left for you" in done and 'id="undo-form"' in done


def test_binary_project_page(tmp_path: Path) -> None:
    with FeedbackStore.create(tmp_path / "b.sqlite", question_type="binary", overlap=1) as store:
        add_completions(store, ["p"], [["one answer"]])
        token = add_annotator(store, "alice")[1]
        client = client_for(store)
        page = login(client, token)
        assert "Is this response good?" in page and 'data-key="g"' in page and 'id="text-right"' not in page
        assert submit(client, page, choice="left").status_code == 400
        assert submit(client, page, choice="bad", toxic_left="1").status_code == 303
        assert [(r.choice, r.toxic) for r in live_labels(store)] == [("bad", (True, False))]


# ------------------------------------------------------------------------------------------- admin


def test_admin_pages_refuse_annotators(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    login(client, tokens["alice"])
    for path in ("/admin", "/admin/export/pairs.jsonl", "/admin/export/unpaired.jsonl"):
        assert client.get(path).status_code == 403, path


def test_admin_sees_agreement_and_exports(store: FeedbackStore, tokens: dict[str, str]) -> None:
    for name in ("alice", "bob"):
        annotator = find_annotator(store, name)
        while (view := labeling.next_item(store, annotator.id)) is not None:
            labeling.submit(
                store,
                annotator.id,
                view.item_id,
                labeling.Answer("first", strength=2),
                f"{name}-{view.item_id}",
            )
    client = client_for(store)
    login(client, tokens["admin"])
    page = client.get("/admin")
    assert page.status_code == 200
    assert re.search(r'id="items-retired">3<', page.text) and re.search(
        r'id="percent-agreement">100.0%<', page.text
    )
    assert "Krippendorff" in page.text and "Fleiss" in page.text and "alice" in page.text
    export = client.get("/admin/export/pairs.jsonl")
    assert export.status_code == 200 and export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in export.text.splitlines()]
    assert lines == [pair_to_trl(p) for p in preference_pairs(store)] and len(lines) == 6
    majority = client.get(
        "/admin/export/pairs.jsonl", params={"aggregate": "majority", "complete_only": "true"}
    )
    assert len(majority.text.splitlines()) == 3
    assert client.get("/admin/export/pairs.jsonl", params={"aggregate": "bogus"}).status_code == 422
    assert len(client.get("/admin/export/unpaired.jsonl").text.splitlines()) == 12


# ----------------------------------------------------------------------------------- hostile input


def test_security_headers(store: FeedbackStore) -> None:
    response = client_for(store).get("/login")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize(
    ("override", "status"),
    [
        ({"item_id": "abc"}, 422),
        ({"item_id": "99999999999999999999999999"}, 422),
        ({"item_id": "0"}, 422),
        ({"item_id": "424242"}, 404),
        ({"client_id": "has spaces <b>"}, 422),
        ({"client_id": "x" * 101}, 422),
        ({"choice": "sideways"}, 400),
        ({"choice": "left", "strength": "9"}, 400),
        ({"choice": "tie", "comment": "nul \x00 inside"}, 400),
        ({"choice": "tie", "comment": "x" * 2500}, 400),
        ({"choice": "tie", "comment": "x" * 5000}, 422),
    ],
)
def test_malformed_label_posts_get_4xx(
    store: FeedbackStore, tokens: dict[str, str], override: dict, status: int
) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    response = client.post("/label", data={**forms(page)["label-form"], "choice": "tie", **override})
    assert response.status_code == status, response.text[:300]
    assert live_labels(store) == []


def test_oversized_and_garbled_requests(store: FeedbackStore, tokens: dict[str, str]) -> None:
    client = client_for(store)
    page = login(client, tokens["alice"])
    fields = forms(page)["label-form"]
    big = client.post("/label", data={**fields, "choice": "tie", "comment": "x" * 70_000})
    assert big.status_code == 413

    def chunks():
        for _ in range(100):
            yield b"comment=" + b"y" * 1000

    assert (
        client.post(
            "/label", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"}
        ).status_code
        == 413
    )
    assert client.post(
        "/label", content=b"\xff\xfe\x00garbage", headers={"content-type": "multipart/form-data; boundary=zz"}
    ).status_code in (400, 422)
    assert (
        client.post("/label", content=b"{}", headers={"content-type": "application/json"}).status_code == 422
    )
    assert client.post(
        "/login",
        content=b"token=%ZZ%00&csrf_token=",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ).status_code in (403, 422)
    assert (
        client.post(
            "/label",
            content=b"a=1",
            headers={"content-length": "nope", "content-type": "application/x-www-form-urlencoded"},
        ).status_code
        == 400
    )
    assert client.get("/label", params={"notice": "x" * 500}).status_code == 422
    assert live_labels(store, include_skips=True) == []


def test_healthz_and_app_opened_from_a_path(store: FeedbackStore, tmp_path: Path) -> None:
    with TestClient(create_app(tmp_path / "app.sqlite")) as client:
        assert client.get("/healthz").json() == {"ok": True, "project": "demo"}
        assert client.get("/static/label.js").status_code == 200
