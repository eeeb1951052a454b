"""Nothing a user uploads runs as a page or a script of iapflow's origin, in a real browser.

The second review's chain: a work item ``files`` entry without a filename made the work item
page's Download link lose its ``download`` attribute; the click opened an uploaded HTML file as
a ``blob:`` page of the UI's origin, which loaded another upload of the attacker's from
``/download/<id>?jwt=`` as a script (the UI allowed ``script-src 'self'``); that script read the
viewer's token from session storage. Now every download in the UI saves, as bytes; the UI runs
scripts and styles from ``/ui/`` only; and ``/download`` never serves an upload as a script,
a page or a style sheet.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from playwright.async_api import Page, expect
from uihelpers import Pages

from iapflow.testing import JsonClient

MARK = "iapflow-xss-ran"
# The attacker's script: it would keep the viewer's token where the attacker can read it.
EVIL_JS = (
    f"window['{MARK}'] = true; document.title = '{MARK}';"
    "const all = JSON.stringify(Object.assign({}, sessionStorage));"
    "fetch('/upload?filename=stolen.txt', {method: 'POST', body: all,"
    " headers: {Authorization: JSON.parse(all)['iapflow.jwt'] || ''}});"
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def plant(attacker: JsonClient, admin: JsonClient) -> dict[str, Any]:
    """The attacker's uploads and a work item listing the page without a filename."""
    shared = {"_acl": [{"_id": "5a17f157c4815318c8536c21", "rights": 2}]}  # all users may read
    script = await attacker.call(
        "savefile", filename="x.js", mimeType="text/javascript", file=b64(EVIL_JS),
        metadata=shared,
    )  # fmt: skip
    page = (
        "<!doctype html><title>invoice</title>"
        f'<script src="/download/{script["id"]}?jwt={attacker.jwt}"></script>'
        f"<script>{EVIL_JS}</script>"
    )
    html = await attacker.call(
        "savefile", filename="invoice.html", mimeType="text/html", file=b64(page),
        metadata=shared,
    )  # fmt: skip
    queue = (await attacker.call("addworkitemqueue", name="invoices"))["result"]
    acl = [*queue["_acl"], {"_id": "5a17f157c4815318c8536c21", "rights": 65535}]
    await attacker.call("updateworkitemqueue", _id=queue["_id"], _acl=acl)
    item = (await attacker.call("addworkitem", wiqid=queue["_id"], name="pay me"))["result"]
    # An entry without a filename (the review set it with updateone; that is refused now, so
    # an admin's edit stands in for whatever else might write one).
    await admin.call(
        "updatedocument", collectionname="workitems", query={"_id": item["_id"]},
        item={"$push": {"files": {"_id": html["id"]}}},
    )  # fmt: skip
    return {"script": script["id"], "html": html["id"], "item": item["_id"]}


async def stolen(admin: JsonClient) -> list[Any]:
    found = await admin.call("query", collectionname="fs.files", query={"filename": "stolen.txt"})
    return list(found["result"])


async def assert_nothing_ran(page: Page, admin: JsonClient) -> None:
    for open_page in page.context.pages:
        assert await open_page.evaluate(f"window['{MARK}'] === undefined")
        assert await open_page.title() != MARK
    assert await stolen(admin) == []


async def test_an_uploaded_page_in_a_work_item_is_saved_never_opened(
    pages: Pages, admin: JsonClient, make_user: Any
) -> None:
    attacker = await make_user("mallory")
    planted = await plant(attacker, admin)
    page = await pages.signed_in("admin", "admin")
    await page.goto(f"/ui/#/workitem?id={planted['item']}")
    button = page.get_by_role("button", name="Download download")
    await expect(button).to_be_visible()
    async with page.expect_download() as waiting:
        await button.click()
    download = await waiting.value
    assert download.suggested_filename == "download"
    saved = await download.path()
    assert saved is not None and "<script" in saved.read_text()  # the bytes, saved as they are
    await page.wait_for_timeout(500)
    assert len(page.context.pages) == 1 and page.url.endswith(f"id={planted['item']}")
    await assert_nothing_ran(page, admin)


async def test_the_ui_never_runs_a_download_as_a_script_or_style(
    pages: Pages, admin: JsonClient, make_user: Any, base_url: str
) -> None:
    attacker = await make_user("trudy")
    planted = await plant(attacker, admin)
    page = await pages.signed_in("admin", "admin")
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None)
    # Whatever gets a <script src> or a style sheet pointing at /download into the UI's page
    # (an injection, a browser extension): the UI's CSP allows scripts and styles from /ui/ only.
    src = f"/download/{planted['script']}?jwt={attacker.jwt}"
    await page.evaluate(
        """(src) => {
            const script = document.createElement("script"); script.src = src;
            document.head.append(script);
            const style = document.createElement("link");
            style.rel = "stylesheet";
            style.href = src;
            document.head.append(style);
        }""",
        src,
    )
    await page.wait_for_timeout(800)
    assert any(src.split("?")[0] in text for text in blocked), blocked
    await assert_nothing_ran(page, admin)
    # and /download serves uploads as bytes, with nosniff, never as a script or a page
    for file_id in (planted["script"], planted["html"]):
        response = await page.request.get(
            f"{base_url}/download/{file_id}", headers={"Authorization": attacker.jwt}
        )
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-disposition"].startswith("attachment")
    # opened directly in a tab of its own, the page is downloaded, not shown
    tab = await pages.new()
    async with tab.expect_download():
        try:
            await tab.goto(f"/download/{planted['html']}?jwt={attacker.jwt}")
        except Exception as exc:  # Chromium reports a navigation that became a download
            assert "Download is starting" in str(exc)
    await assert_nothing_ran(tab, admin)
    assert json.loads(json.dumps(blocked))  # the console named what it blocked
