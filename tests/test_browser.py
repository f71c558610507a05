"""A real browser (Debian's chromium, driven by Playwright) against the launched app on studio-mini:
load the page, visit every tab, generate an image, take a screenshot."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
TABS = ["Museum", "Generate", "Lifelong GAN", "Synthetic data", "Jobs"]

pytestmark = pytest.mark.skipif(not CHROMIUM.is_file(),
                                reason="/usr/bin/chromium is missing (apt-get install -y chromium; .ci/run installs it)")


def drive(url: str, screenshot: Path, prompt: str = "a red fish on the sea background, large, facing left, in the center",
          steps: int = 25, batch: int = 1, timeout_ms: int = 120_000) -> dict:
    """Open the app, visit every tab, generate `batch` images on the Generate tab, screenshot it."""
    from playwright.sync_api import expect, sync_playwright

    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(url)
            expect(page.get_by_role("tab", name="Museum")).to_be_visible(timeout=timeout_ms)
            seen["tabs"] = [t.inner_text().strip() for t in page.get_by_role("tab").all()]
            for name in TABS:
                page.get_by_role("tab", name=name).click()
                page.wait_for_timeout(300)
            expect(page.get_by_text("Every heavy job, newest first")).to_be_visible()
            page.get_by_role("tab", name="Lifelong GAN").click()
            expect(page.get_by_role("button", name="Learn task")).to_be_visible()
            page.get_by_role("tab", name="Synthetic data").click()
            expect(page.get_by_role("button", name="Extract attributes")).to_be_visible()
            page.get_by_role("tab", name="Museum").click()
            expect(page.get_by_role("button", name="Learn style")).to_be_visible()

            page.get_by_role("tab", name="Generate").click()
            page.get_by_label("Prompt", exact=True).fill(prompt)
            for label, value in (("number input for Steps", steps), ("number input for Batch (image i uses seed + i)", batch)):
                box = page.get_by_label(label)
                box.fill(str(value))
                box.press("Enter")
            seed = page.locator("input[aria-label='Seed']:visible")
            seed.fill("3")
            page.get_by_role("button", name="Generate", exact=True).click()
            expect(page.get_by_text("finished").first).to_be_visible(timeout=timeout_ms)
            gallery_images = page.locator(".gallery img, [data-testid='gallery'] img, button.thumbnail-item img")
            expect(gallery_images.first).to_be_visible(timeout=timeout_ms)
            seen["images"] = gallery_images.count()
            page.wait_for_timeout(500)
            page.mouse.wheel(0, -5000)
            page.wait_for_timeout(300)
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
            # "Reuse settings": pick the image, change the seed, reuse -> the picked image's seed is back.
            gallery_images.first.click()
            seed.fill("9")
            page.get_by_role("button", name="Reuse settings of the picked image").click()
            expect(seed).to_have_value("3", timeout=30_000)
            seen["reused_seed"] = seed.input_value()
        finally:
            browser.close()
    return seen


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from generators.diffusion import DEFAULT_BASE
    from studio.webapp import create_app, launch

    root = tmp_path_factory.mktemp("browser")
    demo = create_app(root / "museum", str(DEFAULT_BASE), root / "home", device="cpu")
    launch(demo, port=None, prevent_thread_lock=True, quiet=True)
    try:
        yield demo, root
    finally:
        demo.close()


def test_every_tab_and_one_image_in_a_real_browser(served, tmp_path):
    demo, root = served
    shot = Path(os.environ.get("STUDIO_SCREENSHOT") or tmp_path / "screenshot.png")
    seen = drive(demo.local_url, shot, steps=4, batch=1)
    for word in ("museum", "generate", "gan", "synthetic", "jobs"):
        assert any(word in t.lower() for t in seen["tabs"]), seen["tabs"]
    assert seen["images"] >= 1
    assert shot.stat().st_size > 10_000
    pngs = list((root / "home" / "outputs").rglob("*.png"))
    assert len(pngs) == 1, pngs  # batch 1, as typed into the page
