# ruff: noqa: RUF001  (the community writes Chinese: full-width punctuation is what it types)
"""The web console in a real headless Chromium against a real chatd (issue 15):
what two people see when they chat, and across a dropped connection."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, Page, expect
from support import stop_app

from chatd.app import App

TIMEOUT = 10_000  # ms


async def sign_in(browser: Browser, app: App, user: str, name: str, type: str = "owner") -> Page:
    context = await browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")
    page = await context.new_page()
    await page.goto(f"http://127.0.0.1:{app.port}/console/")
    await expect(page.locator("#dev-form")).to_be_visible(timeout=TIMEOUT)
    await page.get_by_label("User id").fill(user)
    await page.get_by_label("Name").fill(name)
    await page.get_by_label("Type").select_option(type)
    await page.get_by_role("button", name="Sign in as this user").click()
    await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=TIMEOUT)
    await expect(page.locator("#me")).to_have_text(f"{name} ({user})")
    return page


def message(page: Page, text: str) -> Any:
    return page.locator("#messages li").filter(has_text=text)


async def test_two_people_chat_in_a_direct_message(browser: Browser, server: App, tmp_path: Path) -> None:
    bob = await sign_in(browser, server, "bob", "李雷")
    alice = await sign_in(browser, server, "alice", "韩梅梅")
    await alice.get_by_label("New direct message").fill("bob")
    await alice.get_by_role("button", name="Open").click()
    await expect(alice.locator("#conv-title")).to_have_text("bob", timeout=TIMEOUT)
    await alice.get_by_label("Message", exact=True).fill("你好，李雷！明天一起去换电站吗？")
    await alice.get_by_label("Message", exact=True).press("Enter")
    sent = message(alice, "你好，李雷！")
    await expect(sent).to_have_attribute("data-state", "sent", timeout=TIMEOUT)
    await expect(sent.locator(".author")).to_have_text("韩梅梅")
    # bob's list shows the new conversation with one unread message; opening it reads it
    row = bob.locator("#convs button", has_text="alice")
    await expect(row.locator(".unread")).to_have_text("1", timeout=TIMEOUT)
    await row.click()
    await expect(message(bob, "明天一起去换电站吗？").locator(".author")).to_have_text("韩梅梅", timeout=TIMEOUT)
    await expect(row.locator(".unread")).to_have_count(0, timeout=TIMEOUT)
    await bob.get_by_label("Message", exact=True).fill("好的 👍")
    await bob.get_by_role("button", name="Send").click()
    await expect(message(alice, "好的 👍").locator(".author")).to_have_text("李雷", timeout=TIMEOUT)
    await screenshot(bob, "dm-receiver", tmp_path)
    # each message once, in order, on both sides
    for page in (alice, bob):
        texts = await page.locator("#messages .msg-text").all_inner_texts()
        assert texts == ["你好，李雷！明天一起去换电站吗？", "好的 👍"], texts


async def screenshot(page: Page, name: str, tmp_path: Path) -> None:
    """Into the test's folder, and into $CHATD_SCREENSHOTS when set (docs/console/
    keeps the current ones: CHATD_SCREENSHOTS=docs/console pytest tests/console)."""
    await page.screenshot(path=str(tmp_path / f"{name}.png"))
    target = os.environ.get("CHATD_SCREENSHOTS")
    if target:
        await page.screenshot(path=str(Path(target) / f"{name}.png"))


async def test_a_dropped_connection_loses_and_doubles_nothing(
    browser: Browser, server: App, make_server: Any, clients: Any, tmp_path: Path
) -> None:
    bob = await sign_in(browser, server, "bob", "李雷")
    alice = await sign_in(browser, server, "alice", "韩梅梅")
    await alice.get_by_label("New direct message").fill("bob")
    await alice.get_by_role("button", name="Open").click()
    await alice.get_by_label("Message", exact=True).fill("第一条")
    await alice.get_by_label("Message", exact=True).press("Enter")
    await expect(message(alice, "第一条")).to_have_attribute("data-state", "sent", timeout=TIMEOUT)
    await bob.locator("#convs button", has_text="alice").click()
    await expect(message(bob, "第一条")).to_have_count(1, timeout=TIMEOUT)

    port = server.port
    await stop_app(server)  # every socket drops
    for page in (alice, bob):
        await expect(page.locator("#status")).to_have_attribute("data-state", "reconnecting", timeout=TIMEOUT)
    await alice.get_by_label("Message", exact=True).fill("断线时写的")
    await alice.get_by_label("Message", exact=True).press("Enter")
    await expect(message(alice, "断线时写的")).to_have_attribute("data-state", "pending")
    await screenshot(alice, "reconnecting", tmp_path)

    again = await make_server(port=port)  # the same store, the same port
    phone = await clients(again, "bob", name="李雷", encoding="json")  # bob's other device
    reply = await phone.request("send", conv="dm:alice:bob", cid="from-the-phone", text="你在吗？")
    assert reply.d["seq"] >= 2
    for page in (alice, bob):
        await expect(page.locator("#status")).to_have_attribute("data-state", "connected", timeout=TIMEOUT)
    await expect(message(alice, "断线时写的")).to_have_attribute("data-state", "sent", timeout=TIMEOUT)
    for page in (alice, bob):
        await expect(message(page, "你在吗？")).to_have_count(1, timeout=TIMEOUT)
        await expect(message(page, "断线时写的")).to_have_count(1, timeout=TIMEOUT)
    await screenshot(alice, "dm", tmp_path)
    history = await phone.request("history", conv="dm:alice:bob")
    texts = [m["text"] for m in history.d["messages"]]
    assert sorted(texts) == sorted(["第一条", "断线时写的", "你在吗？"]) and len(texts) == 3  # stored once each
    for page in (alice, bob):  # and shown once each, in seq order
        shown = await page.locator("#messages .msg-text").all_inner_texts()
        assert shown == texts, (shown, texts)


async def test_with_a_real_key_the_console_offers_only_the_token_form(browser: Browser, make_server: Any) -> None:
    app = await make_server(secret="a-production-secret-of-enough-length-0123456789")
    page = await (await browser.new_context()).new_page()
    await page.goto(f"http://127.0.0.1:{app.port}/console/")
    await expect(page.get_by_label("Token")).to_be_visible(timeout=TIMEOUT)
    await expect(page.locator("#dev-form")).to_be_hidden()
    await page.get_by_label("Token").fill("not a token")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    # the server closes with 4101: back to the sign-in form, saying why
    await expect(page.locator("#signin-error")).to_contain_text("4101", timeout=TIMEOUT)
    await expect(page.get_by_label("Token")).to_be_visible()


async def test_circles_are_discovered_and_joined_and_show_typing_and_receipts(
    browser: Browser, server: App, clients: Any, tmp_path: Path
) -> None:
    carol = await clients(server, "carol", name="陈晨", encoding="json")
    made = await carol.request("circle.create", name="上海 ES8 车主", category="city")
    conv = made.d["conv"]
    await carol.request("circle.create", name="露营", category="interest")  # not in the city list
    alice = await sign_in(browser, server, "alice", "韩梅梅")
    bob = await sign_in(browser, server, "bob", "李雷")
    for page in (alice, bob):
        await page.get_by_label("Discover circles").select_option("city")
        await page.get_by_role("button", name="Find circles").click()
        await expect(page.locator("#circles li")).to_have_count(1, timeout=TIMEOUT)
        await page.get_by_role("button", name="Join 上海 ES8 车主").click()
        await expect(page.locator("#conv-title")).to_have_text("上海 ES8 车主", timeout=TIMEOUT)
    await expect(message(alice, "bob joined")).to_have_count(1, timeout=TIMEOUT)
    # typing shows on the other side, then the message, then bob's read of it on alice's
    await alice.get_by_label("Message", exact=True).press_sequentially("周末")
    await expect(bob.locator("#typing")).to_have_text("alice is typing…", timeout=TIMEOUT)
    await alice.get_by_label("Message", exact=True).press_sequentially("去崇明岛吗")
    await alice.get_by_label("Message", exact=True).press("Enter")
    await expect(message(bob, "周末去崇明岛吗").locator(".author")).to_have_text("韩梅梅", timeout=TIMEOUT)
    await expect(message(alice, "周末去崇明岛吗").locator(".receipt")).to_have_text("read by bob", timeout=TIMEOUT)
    await screenshot(alice, "circle", tmp_path)
    # bob leaves: the circle goes from his list, and the circle says so
    await bob.get_by_role("button", name="Leave circle").click()
    await expect(bob.locator("#convs button", has_text="上海 ES8 车主")).to_have_count(0, timeout=TIMEOUT)
    await expect(message(alice, "bob left")).to_have_count(1, timeout=TIMEOUT)
    members = await carol.request("members", conv=conv)
    assert sorted(m["user"] for m in members.d["members"]) == ["alice", "carol"]
