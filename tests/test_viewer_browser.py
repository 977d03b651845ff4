"""The viewer and the reports in a real browser: Debian's Chromium driven by Playwright.

Playwright cannot download its own browser here, so it drives the system's ``chromium`` through
``executable_path``. Without one the tests skip with the reason; CI sets
``NUCSEG_REQUIRE_BROWSER=1`` (and installs chromium), which turns the skip into a failure.
"""

from __future__ import annotations

import io
import os
import shutil
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from viewer_helpers import make_run

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WAIT_MS = 60_000  # generous: the machine may be busy; nothing here is timed


def _missing(reason: str) -> None:
    if os.environ.get("NUCSEG_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}; NUCSEG_REQUIRE_BROWSER=1 forbids skipping")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        _missing("no chromium on PATH (Debian: apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python is not installed (pip install playwright)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("browser"))


def serve(path, **options):
    from nucseg.viewer import start

    server, url = start(path, **options)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, url


@pytest.fixture(scope="module")
def viewer_url(run):
    server, url = serve(run)
    yield url
    server.shutdown()
    server.server_close()


@pytest.fixture
def page(browser, viewer_url):
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(viewer_url)
    page.wait_for_function(
        "window.nucseg && nucseg.ready && nucseg.tilesLoaded > 0", timeout=WAIT_MS
    )
    page.wait_for_function("nucseg.box !== null && nucseg.drawn === nucseg.count", timeout=WAIT_MS)
    yield page
    assert errors == []
    page.close()


def expected_in(table: pd.DataFrame, box: list[float]) -> int:
    x0, y0, x1, y1 = box
    return int(
        ((table["bbox_x0"] <= x1) & (table["bbox_x1"] >= x0)
         & (table["bbox_y0"] <= y1) & (table["bbox_y1"] >= y0)).sum()
    )  # fmt: skip


def zoom_to(page, x: float, y: float, w: float, h: float) -> None:
    before = page.evaluate("JSON.stringify(nucseg.box)")
    page.evaluate(
        """([x, y, w, h]) => { const v = nucseg_viewer();
        v.viewport.fitBounds(v.world.getItemAt(0).imageToViewportRectangle(x, y, w, h), true); }""",
        [x, y, w, h],
    )
    page.wait_for_function(
        "(before) => JSON.stringify(nucseg.box) !== before && nucseg.drawn === nucseg.count",
        arg=before,
        timeout=WAIT_MS,
    )


def page_point(page, x: float, y: float) -> tuple[float, float]:
    """Where level-0 point (x, y) is on the page."""
    return tuple(
        page.evaluate(
            """([x, y]) => { const v = nucseg_viewer(), image = v.world.getItemAt(0);
            const p = image.imageToViewerElementCoordinates(new OpenSeadragon.Point(x, y));
            const box = v.element.getBoundingClientRect();
            return [box.left + p.x, box.top + p.y]; }""",
            [x, y],
        )
    )


def test_tiles_load_and_the_outlines_in_view_are_drawn(page, run):
    table = pd.read_parquet(
        run / "nuclei.parquet", columns=["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]
    )
    state = page.evaluate("({...nucseg})")
    assert state["complete"] and state["drawn"] == expected_in(table, state["box"]) == len(table)
    zoom_to(page, 300, 300, 240, 160)
    state = page.evaluate("({...nucseg})")
    assert 0 < state["drawn"] == expected_in(table, state["box"]) < len(table)
    shot = np.asarray(Image.open(io.BytesIO(page.locator("#osd").screenshot())))[..., :3]
    pink = np.all(np.abs(shot.astype(int) - (225, 170, 215)) < 12, axis=2).mean()
    yellow = np.all(np.abs(shot.astype(int) - (255, 225, 25)) < 40, axis=2).sum()
    assert pink > 0.3 and yellow > 200  # the slide's tiles, and outlines on them


def test_click_on_a_nucleus_shows_its_measurements(page, run):
    table = pd.read_parquet(run / "nuclei.parquet")
    nucleus = table.iloc[len(table) // 2]
    zoom_to(page, nucleus["centroid_x"] - 60, nucleus["centroid_y"] - 40, 120, 80)
    page.mouse.click(*page_point(page, nucleus["centroid_x"], nucleus["centroid_y"]))
    page.wait_for_selector("#nucleus", timeout=WAIT_MS)
    cells = dict(
        page.eval_on_selector_all(
            "#nucleus tr", "rows => rows.map(r => [r.cells[0].textContent, r.cells[1].textContent])"
        )
    )
    assert cells["id"] == str(nucleus["id"])
    assert float(cells["area_um2"]) == pytest.approx(nucleus["area_um2"], rel=1e-3)
    page.mouse.click(*page_point(page, nucleus["centroid_x"] + 20, nucleus["centroid_y"]))  # glass
    page.wait_for_function("nucseg.selected === null", timeout=WAIT_MS)


def test_hovering_a_flagged_chunk_shows_the_reason(page):
    flag = page.locator('.flag[data-chunk="r0003_c0000"]')
    flag.hover()
    tip = page.locator("#tip")
    tip.wait_for(state="visible", timeout=WAIT_MS)
    assert "r0003_c0000" in tip.inner_text() and "a nucleus of" in tip.inner_text()
    page.uncheck("#show-flags")
    flag.wait_for(state="hidden", timeout=WAIT_MS)
    # OpenSeadragon redraws overlays (setting their inline display) as the view moves: a pan
    # and two animation frames later the flag must still be hidden.
    box = page.locator("#osd").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 40, box["y"] + box["height"] / 2 + 30, steps=5)
    page.mouse.up()
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    assert not flag.is_visible()
    page.check("#show-flags")
    flag.wait_for(state="visible", timeout=WAIT_MS)


def test_zoomed_out_past_the_outline_limit_shows_the_density(browser, run):
    server, url = serve(run, max_outlines=10)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        page.goto(url)
        page.wait_for_function("nucseg.box !== null && nucseg.density === true", timeout=WAIT_MS)
        state = page.evaluate("({...nucseg})")
        assert state["drawn"] == 0 and state["count"] > 10 and not state["complete"]
        assert "zoom in" in page.inner_text("#status")
    finally:
        page.close()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("name", ["disks/report.html", "cohort.html"])
def test_reports_render_offline_with_their_plots(browser, run, name):
    from nucseg.slide.htmlreport import write_cohort_report

    write_cohort_report(run.parent)
    context = browser.new_context(offline=True)
    requested = []
    context.on("request", lambda request: requested.append(request.url))
    page = context.new_page()
    try:
        page.goto((run.parent / name).as_uri())
        page.wait_for_load_state("load")
        images = page.eval_on_selector_all(
            "img", "imgs => imgs.map(i => [i.complete && i.naturalWidth > 0, i.alt])"
        )
        # a slide: thumbnail, plots, the flagged chunk; the cohort: plots, a thumbnail per slide
        assert len(images) >= (3 if name.endswith("report.html") else 2)
        assert all(ok for ok, _ in images), images
        assert any("distributions" in alt or "cohort plots" in alt for _, alt in images)
        assert all(url.startswith(("file:", "data:")) for url in requested)
    finally:
        context.close()


def test_outlines_are_coloured_by_type(browser, run, tmp_path):
    """With a `type` column the legend lists the types and the outlines take their colours."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "typed"
    shutil.copytree(run, folder)
    table = pq.read_table(run / "nuclei.parquet")
    kinds = np.array(["epithelial", "inflammatory"])[np.arange(table.num_rows) % 2]
    pq.write_table(table.append_column("type", pa.array(kinds.tolist())), folder / "nuclei.parquet")
    server, url = serve(folder)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        page.goto(url)
        page.wait_for_function(
            "nucseg.box !== null && nucseg.drawn === nucseg.count", timeout=WAIT_MS
        )
        assert "epithelial" in page.inner_text("#legend") and "spindle" in page.inner_text(
            "#legend"
        )
        zoom_to(page, 300, 300, 240, 160)
        shot = np.asarray(Image.open(io.BytesIO(page.locator("#outlines").screenshot())))[..., :3]
        for colour in ((230, 25, 75), (60, 180, 75)):  # epithelial red, inflammatory green
            assert np.all(np.abs(shot.astype(int) - colour) < 40, axis=2).sum() > 100, colour
    finally:
        page.close()
        server.shutdown()
        server.server_close()


def test_zoomed_far_out_shows_the_density_not_specks(browser, viewer_url):
    """Past 1.5 um per screen pixel the nuclei would be specks: the density map instead (here
    the 1024-pixel slide in a 120-pixel wide view: 8.5 pixels, 2.1 um per screen pixel)."""
    page = browser.new_page(viewport={"width": 420, "height": 300})  # the panel takes 300
    try:
        page.goto(viewer_url)
        page.wait_for_function("nucseg.box !== null && nucseg.density === true", timeout=WAIT_MS)
        state = page.evaluate("({...nucseg})")
        assert state["drawn"] == 0 and not state["complete"] and state["count"] > 100
    finally:
        page.close()
