"""Files in a real browser: upload and download through the HTTP routes with the user's token,
a private upload hidden from another user until the ACL editor grants read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from playwright.async_api import Page, expect
from uihelpers import Pages

from iapflow.testing import JsonClient

CONTENT = "line one\nline two, ünïcode\n".encode() + bytes(range(256))


async def upload(page: Page, name: str, content: bytes, private: bool = False) -> None:
    await page.goto("/ui/#/files")
    await page.get_by_label("File", exact=True).set_input_files(
        {"name": name, "mimeType": "application/octet-stream", "buffer": content}
    )
    if private:
        await page.get_by_label("Only me and admins").check()
    await page.get_by_role("button", name="Upload").click()
    await expect(page.get_by_role("status").filter(has_text=f"Uploaded {name}")).to_be_visible()


async def download(page: Page, name: str, tmp_path: Path) -> bytes:
    async with page.expect_download() as info:
        await page.get_by_role("button", name=f"Download {name}").click()
    got = await info.value
    assert got.suggested_filename == name
    target = tmp_path / f"downloaded-{name}"
    await got.save_as(target)
    return target.read_bytes()


async def test_upload_and_download_a_file(pages: Pages, admin: JsonClient, tmp_path: Path) -> None:
    page = await pages.signed_in("admin", "admin")
    await upload(page, "report.bin", CONTENT)
    await expect(page.get_by_role("link", name="report.bin")).to_be_visible()
    stored = await admin.call("query", collectionname="files", query={"filename": "report.bin"})
    assert stored["result"][0]["length"] == len(CONTENT)
    assert await download(page, "report.bin", tmp_path) == CONTENT
    # a file saved by another client appears in the open list
    await admin.call("savefile", filename="from-api.txt", file="aGVsbG8=")
    await expect(page.get_by_role("link", name="from-api.txt")).to_be_visible()
    assert await download(page, "from-api.txt", tmp_path) == b"hello"
    # and from the file's own page
    await page.get_by_role("link", name="report.bin").click()
    await expect(page.get_by_role("heading", name="report.bin")).to_be_visible()
    assert await download(page, "report.bin", tmp_path) == CONTENT


async def test_private_file_needs_a_grant_through_the_acl_editor(
    pages: Pages, make_user: Any, tmp_path: Path
) -> None:
    await make_user("frank")
    page = await pages.signed_in("admin", "admin")
    await upload(page, "private.txt", b"for admins", private=True)
    frank = await pages.signed_in("frank", "secret")
    await frank.goto("/ui/#/files")
    await expect(frank.get_by_role("table")).to_contain_text("0 files you may read")
    await expect(frank.get_by_role("link", name="private.txt")).to_have_count(0)

    await page.get_by_role("link", name="private.txt").click()
    await page.get_by_label("Add user or role").fill("frank")
    await page.get_by_role("button", name="Search").click()
    await page.get_by_role("button", name="Add frank (user)").click()
    await page.get_by_role("button", name="Save ACL").click()
    await expect(page.get_by_role("status").filter(has_text="ACL saved.")).to_be_visible()

    await frank.reload()
    await expect(frank.get_by_role("link", name="private.txt")).to_be_visible()
    assert await download(frank, "private.txt", tmp_path) == b"for admins"
    # read is not update: frank's ACL change is refused in the server's words
    await frank.get_by_role("link", name="private.txt").click()
    file_id = frank.url.rsplit("id=", 1)[1]
    await frank.get_by_role("button", name="Save ACL").click()
    await expect(frank.get_by_role("alert")).to_have_text(
        f"file {file_id} not found, or you lack update right on it"
    )
