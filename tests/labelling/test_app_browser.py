"""The labelling app end to end in a real headless Chromium (Debian's chromium, driven by
Playwright): two labellers sign in, rank and score four answers each (one by keyboard, one by
drag and drop), submit; the admin's report shows their agreement; the export has six pairs per
ranking and ``rlhf prepare`` reads it. The test's screenshot of the app is the one in
docs/labelling.md: ``RLHF_DOCS_SCREENSHOT=1`` writes it to docs/images/labelling-app.png."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from label_data import make_tasks, seed
from label_servers import start_app

from rlhf import storage
from rlhf.cli import main

CHROMIUM = "/usr/bin/chromium"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "labelling-app.png"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (make install-dev does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking"],
        )  # fmt: skip
        yield browser
        browser.close()


def _sign_in(page, url, name, secret):
    page.goto(url)
    page.fill("#name", name)
    page.fill("#secret", secret)
    page.click("#sign-in button[type=submit]")


def _card(page, text):
    return page.locator("#answers li", has_text=text)


def _order(page):
    return page.locator("#answers li .text").all_inner_texts()


def _rank_by_keys(page, wanted, scores, flag=None):
    """Move each answer up with the arrow keys to its place; score it with a digit key."""
    for place, text in enumerate(wanted):
        card = _card(page, text)
        card.focus()
        for _ in range(_order(page).index(text) - place):
            page.keyboard.press("ArrowUp")
        page.keyboard.press(str(scores[place]))
    if flag:
        _card(page, flag).locator("input[value=nonsense]").check()


def _rank_by_dragging(page, wanted, scores):
    """Drop each answer on the one at its place; score it with the buttons."""
    for place, text in enumerate(wanted):
        if _order(page)[place] != text:
            _card(page, text).drag_to(page.locator("#answers li").nth(place))
        _card(page, text).locator(f".scores button[data-score='{scores[place]}']").click()


def test_two_labellers_rank_in_the_browser_then_export_and_prepare(browser, tmp_path):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    tasks = make_tasks(2)
    tokens = seed(db, ["alice", "bob"], tasks, per_task=2, admin="admin")
    texts = {t.task_id: [c.text for c in t.candidates] for t in tasks}
    prompts = {t.prompt[0]["content"]: t.task_id for t in tasks}
    server = start_app(db, tmp_path / "app.log")
    try:
        page = browser.new_page(viewport={"width": 1000, "height": 640})
        # A wrong token is refused on the page, with the server's words.
        _sign_in(page, server.url, "alice", "wrong")
        page.wait_for_selector("#message:not([hidden])")
        assert page.inner_text("#message") == "wrong name, token or password"

        _sign_in(page, server.url, "alice", tokens["alice"])
        page.wait_for_selector("#task:not([hidden])")
        assert page.inner_text("#progress") == "0 / 2 done"
        for n in range(2):
            task_id = prompts[page.inner_text("#prompt")]
            wanted = texts[task_id]  # alice: c0 > c1 > c2 > c3
            # submitting before scoring is refused on the page, nothing sent
            page.click("#submit")
            assert "Score every answer" in page.inner_text("#message")
            _rank_by_keys(page, wanted, [7, 5, 3, 1], flag=wanted[3] if n == 0 else None)
            assert _order(page) == wanted
            if n == 0:
                page.screenshot(path=str(tmp_path / "labelling-app.png"))
            page.click("#submit")
            page.wait_for_function(
                f"document.querySelector('#progress').textContent.startsWith('{n + 1} /')"
            )
        page.wait_for_selector("#done:not([hidden])")
        page.click("#sign-out")

        _sign_in(page, server.url, "bob", tokens["bob"])
        page.wait_for_selector("#task:not([hidden])")
        for n in range(2):
            task_id = prompts[page.inner_text("#prompt")]
            c0, c1, c2, c3 = texts[task_id]
            wanted = [c1, c0, c2, c3]  # bob swaps the first two: 5 of 6 pairs agree
            _rank_by_dragging(page, wanted, [6, 6, 2, 1])
            assert _order(page) == wanted
            page.click("#submit")
            page.wait_for_function(
                f"document.querySelector('#progress').textContent.startsWith('{n + 1} /')"
            )
        page.wait_for_selector("#done:not([hidden])")
        page.click("#sign-out")

        # The admin's report: 10 of 12 pairs agree.
        _sign_in(page, server.url, "admin", tokens["admin"])
        page.wait_for_selector("#report-link:not([hidden])")
        page.click("#report-link")
        page.wait_for_selector("#labellers tbody tr")
        rows = page.locator("#labellers tbody tr").all_inner_texts()
        assert [r.split("\t")[:5] for r in rows] == [
            ["alice", "2 / 2", "0", "83.3% (10/12)", "–"],
            ["bob", "2 / 2", "0", "83.3% (10/12)", "–"],
        ]
        assert "nonsense 1" in rows[0]
        assert "Pair agreement between labellers: 83.3% (10/12)" in page.inner_text("#summary")
        page.close()
    finally:
        server.stop()

    shot = tmp_path / "labelling-app.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("RLHF_DOCS_SCREENSHOT") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)

    # Export: 4 rankings x 6 pairs, then rlhf prepare's own entry point reads it.
    out = tmp_path / "export"
    assert main(["label", "export", "--db", db, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 24
    assert {(r["labeller"], r["task_id"]) for r in rows} == {
        (who, f"b1/{t}") for who in ("alice", "bob") for t in texts
    }
    first = next(r for r in rows if r["labeller"] == "alice")
    assert (first["chosen_id"], first["rejected_id"], first["margin"]) == ("c0", "c1", 2 / 6)
    assert first["agreement"] == pytest.approx(10 / 12)
    assert storage.read_manifest(str(out))["pairs"] == 24
    prepared = tmp_path / "prepared"
    code = main(
        ["prepare", "--no-track", "--preferences", str(out / "preferences.jsonl"),
         "--out", str(prepared), "--set", "validation_fraction=0.25"]
    )  # fmt: skip
    assert code == 0
    from datasets import load_from_disk

    splits = load_from_disk(str(prepared / "preferences"))
    distinct = {(r["task_id"], r["chosen"], r["rejected"], r["margin"]) for r in rows}
    assert sum(len(s) for s in splits.values()) == len(distinct)  # prepare drops duplicates
