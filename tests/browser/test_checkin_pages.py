"""A student checks in from the QR a real agent rendered, in a real browser: first with id and
PIN, then with one tap; the clear states (late/duplicate/expired), keyboard-only use, labels,
and the admin's live room view filling from the event stream."""

from __future__ import annotations

import re

from playwright import sync_api
from playwright.sync_api import expect

from edge_agent.protocol import keys
from edge_agent.protocol import qrtoken
from tests import system
from tests.browser import conftest

CONTRAST = """() => {
  const rgba = (text) => text.match(/[\\d.]+/g).map(Number);
  const linear = (v) => (v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  const luminance = ([r, g, b]) => 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  const background = (node) => {
    for (; node; node = node.parentElement) {
      const color = rgba(getComputedStyle(node).backgroundColor);
      if (color.length < 4 || color[3] > 0) return color;
    }
    return [255, 255, 255];
  };
  const found = {};
  const texts = "h1, label, button, a, p, small, summary, strong, span";
  for (const node of document.querySelectorAll(texts)) {
    if (!node.offsetParent || !node.textContent.trim()) continue;
    const a = luminance(rgba(getComputedStyle(node).color)), b = luminance(background(node));
    found[node.tagName + "#" + node.id] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  }
  return found;
}"""


def assert_contrast(page: sync_api.Page) -> None:
    """WCAG 2 contrast of every visible text element against its background: >= 4.5:1."""
    ratios = page.evaluate(CONTRAST)
    assert len(ratios) >= 5
    low = {name: round(ratio, 2) for name, ratio in ratios.items() if ratio < 4.5}
    assert not low, low


def test_check_in_from_the_rendered_qr_then_one_tap(
    room: conftest.Room, context: sync_api.BrowserContext, dashboard: sync_api.Page
) -> None:
    dashboard.get_by_role("link", name="Live room").click()
    dashboard.get_by_label("Room", exact=True).select_option("campus/a-101")
    expect(dashboard.locator("#live-summary")).to_contain_text("0 checked in today")

    url = room.fresh_qr()
    room.first_url = url
    assert url.startswith(room.url + "/c/campus/pi-a101/")
    student = context.new_page()
    student.goto(url)
    expect(student.locator("h1")).to_contain_text("Hall A-101")
    student.get_by_label("Student id").fill("s1")
    student.get_by_label("PIN").fill(conftest.STUDENTS["s1"])
    student.get_by_role("button", name="Check in").click()
    result = student.locator("#result")
    expect(result).to_have_attribute("data-state", "present")
    expect(result).to_contain_text("You're checked in.")
    conftest.screenshot(student, "checkin-success")

    # The admin's live room view fills from the SSE stream, without a reload.
    expect(dashboard.locator('#live-table tr[data-student="s1"]')).to_have_count(1)
    expect(dashboard.locator("#live-summary")).to_contain_text("1 checked in today")

    # A session starts: the remembered browser checks in with one tap (no id, no PIN).
    room.add_course_now()
    student.goto(room.qr_after(url))
    expect(student.locator("#remembered")).to_be_visible()
    expect(student.get_by_label("Student id")).to_be_hidden()
    student.get_by_role("button", name="Check in").click()
    expect(result).to_have_attribute("data-state", "present")
    expect(dashboard.locator('#live-table tr[data-student="s1"]')).to_have_count(2)
    expect(dashboard.locator("#live-table tbody tr").first).to_contain_text("#")
    conftest.screenshot(dashboard, "dashboard-live-room")

    # Once more in the same session: a clear "already checked in", not an error.
    student.reload()
    student.get_by_role("button", name="Check in").click()
    expect(result).to_have_attribute("data-state", "duplicate")
    expect(result).to_contain_text("already checked in")


def test_expired_code_says_scan_again(
    room: conftest.Room, context: sync_api.BrowserContext
) -> None:
    old = room.first_url or room.fresh_qr()
    slot = qrtoken.parse(old).slot
    system.wait_for(
        lambda: (url := room.qr()) and qrtoken.parse(url).slot >= slot + 2,
        4 * conftest.SLOT_S,
        "the QR to move two slots on",
    )
    page = context.new_page()
    page.goto(old)
    page.get_by_label("Student id").fill("s3")
    page.get_by_label("PIN").fill(conftest.STUDENTS["s3"])
    page.get_by_role("button", name="Check in").click()
    expect(page.locator("#result")).to_have_attribute("data-state", "expired")
    expect(page.locator("#result")).to_contain_text("Scan the screen again")
    assert_contrast(page)
    expect(page.get_by_label("Student id")).to_be_visible()  # nothing remembered on failure


def test_wrong_pin_and_a_forged_link(room: conftest.Room, context: sync_api.BrowserContext) -> None:
    page = context.new_page()
    page.goto(room.qr() or room.fresh_qr())
    page.get_by_label("Student id").fill("s3")
    page.get_by_label("PIN").fill("0000")
    page.get_by_role("button", name="Check in").click()
    expect(page.locator("#result")).to_have_attribute("data-state", "bad_credentials")
    # A link whose signature is not the device's: "wrong room", never a success.
    slot = qrtoken.parse(room.qr() or room.fresh_qr()).slot
    signature = qrtoken.sign(keys.SigningKey.generate(), "campus", "pi-a101", "a-101", slot)
    page.goto(qrtoken.url(room.url, "campus", "pi-a101", slot, signature))
    page.get_by_label("Student id").fill("s3")
    page.get_by_label("PIN").fill(conftest.STUDENTS["s3"])
    page.get_by_role("button", name="Check in").click()
    expect(page.locator("#result")).to_have_attribute(
        "data-state", re.compile("wrong_room|invalid")
    )


def test_keyboard_only_check_in_with_labelled_inputs(
    room: conftest.Room, context: sync_api.BrowserContext
) -> None:
    page = context.new_page()
    page.goto(room.qr() or room.fresh_qr())
    unlabelled = page.evaluate(
        "[...document.querySelectorAll('input')].filter(i => !i.labels.length).map(i => i.id)"
    )
    assert unlabelled == []
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "student_id"
    page.keyboard.type("s2")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "pin"
    page.keyboard.type(conftest.STUDENTS["s2"])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "submit"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline != "none"  # focus is visible
    page.keyboard.press("Enter")
    result = page.locator("#result")
    expect(result).to_have_attribute("data-state", re.compile("present|late"))
    expect(result).to_be_focused()  # the outcome is read out and reachable at once
    assert_contrast(page)

    otp = context.new_page()
    otp.goto(room.url + "/otp?site=campus&room=a-101")
    assert otp.evaluate("[...document.querySelectorAll('input')].every(i => i.labels.length > 0)")
    expect(otp.get_by_label("Room", exact=True)).to_have_value("a-101")


def test_pages_speak_the_browsers_language(room: conftest.Room, browser: sync_api.Browser) -> None:
    german = browser.new_context(locale="de-DE")
    page = german.new_page()
    page.goto(room.qr() or room.fresh_qr())
    expect(page.locator("html")).to_have_attribute("lang", "de")
    expect(page.get_by_label("Matrikelnummer")).to_be_visible()
    expect(page.get_by_role("button", name="Anmelden")).to_be_visible()
    german.close()
