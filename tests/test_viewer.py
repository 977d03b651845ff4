"""The viewer's pieces without a browser: what a folder holds, tiles, the spatial index and its
outlines, clicks, density, the server's routes and the `nucseg view` command."""

from __future__ import annotations

import io
import json
import shutil
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import shapely
from PIL import Image
from viewer_helpers import BLOCK, SIZE, make_run

from nucseg.cli import main
from nucseg.viewer.nuclei import NucleiLayer

pytest.importorskip("openslide")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("viewer"))


@pytest.fixture(scope="module")
def layer(run) -> NucleiLayer:
    return NucleiLayer.from_parquet(run / "nuclei.parquet")


def geojson_shapes(path: Path) -> dict[int, shapely.Geometry]:
    features = json.loads(path.read_text())["features"]
    return {
        int(f["properties"]["measurements"]["id"]): shapely.from_geojson(json.dumps(f["geometry"]))
        for f in features
    }


def decode(data: bytes) -> dict:
    """The inverse of NucleiLayer.outlines' packing (what viewer.js reads)."""
    n, points, complete = struct.unpack_from("<III", data)
    if not complete:
        return {"n": n, "complete": False}
    offset = 12
    ids = np.frombuffer(data, "<i4", n, offset)
    offset += 4 * n
    types = np.frombuffer(data, np.uint8, n, offset)
    offset += n + (-n % 4)
    starts = np.frombuffer(data, "<u4", n + 1, offset)
    offset += 4 * (n + 1)
    xy = np.frombuffer(data, "<f4", 2 * points, offset).reshape(-1, 2)
    assert offset + xy.nbytes == len(data)
    rings = [xy[starts[i] : starts[i + 1]] for i in range(n)]
    return {"n": n, "complete": True, "ids": ids, "types": types, "rings": rings}


# --- the slide run's outputs ------------------------------------------------------------------


def test_parquet_outlines_equal_the_geojson(run):
    """nuclei.parquet's WKB geometry is the GeoJSON's outline of the same id (GeoParquet)."""
    table = pq.read_table(run / "nuclei.parquet")
    assert json.loads(table.schema.metadata[b"geo"])["primary_column"] == "geometry"
    shapes = shapely.from_wkb(table["geometry"].to_numpy(zero_copy_only=False))
    reference = geojson_shapes(run / "nuclei.geojson")
    ids = table["id"].to_numpy()
    assert len(ids) == len(reference) > 100
    for nucleus, shape in zip(ids, shapes, strict=True):
        assert shapely.equals_exact(shape, reference[int(nucleus)], tolerance=0)


def test_thumbnail_is_capped(tmp_path):
    """Over the byte cap, the thumbnail becomes a palette PNG, then shrinks until it fits; the
    longest side never exceeds the size asked."""
    from nucseg.slide.writers import write_thumbnail

    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)  # incompressible
    size = write_thumbnail(tmp_path / "a.png", noise, [], shape=(900, 1200), scale=1.0, size=1000,
                           max_bytes=300_000)  # fmt: skip
    assert (tmp_path / "a.png").stat().st_size <= 300_000
    assert max(size) < 1000  # noise does not fit 300 kB at 1000 pixels, even with a palette
    assert Image.open(tmp_path / "a.png").size == size
    smooth = np.full((900, 1200, 3), 200, dtype=np.uint8)
    size = write_thumbnail(tmp_path / "b.png", smooth, [], shape=(900, 1200), scale=1.0, size=600)
    assert size == (600, 450) and Image.open(tmp_path / "b.png").mode == "RGB"


def test_thumbnail_keeps_true_colour_where_it_fits_and_shrinks_once_where_not(tmp_path):
    """The true-colour try is skipped only when a quarter of the rows says it cannot fit: a
    mostly white slide with a little tissue stays true colour; noise shrinks straight to a side
    that fits, not far below it."""
    from nucseg.slide.writers import write_thumbnail

    rng = np.random.default_rng(1)
    sparse = np.full((2000, 2000, 3), 245, dtype=np.uint8)
    sparse[900:1100, 900:1100] = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    size = write_thumbnail(tmp_path / "s.png", sparse, [], shape=(2000, 2000), scale=1.0,
                           size=2000, max_bytes=300_000)  # fmt: skip
    assert size == (2000, 2000) and Image.open(tmp_path / "s.png").mode == "RGB"
    noise = rng.integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    size = write_thumbnail(tmp_path / "n.png", noise, [], shape=(2000, 2000), scale=1.0,
                           size=2000, max_bytes=300_000)  # fmt: skip
    assert (tmp_path / "n.png").stat().st_size <= 300_000
    assert 400 < max(size) < 2000  # a palette byte a pixel: about 540 pixels a side fit


def test_thumbnail_size_option(run, tmp_path, capsys):
    from viewer_helpers import CHUNK, threshold_segmenter

    from nucseg.slide import segment_slide

    slide = run.parent.parent / "disks.tif"
    assert Image.open(run / "thumbnail_overlay.png").size == (SIZE, SIZE)  # never enlarged
    segment_slide(slide, tmp_path, segmenter=threshold_segmenter, chunk=CHUNK, progress=False,
                  thumbnail_size=300)  # fmt: skip
    assert Image.open(tmp_path / "disks" / "thumbnail_overlay.png").size == (300, 300)
    assert main(["slide", str(slide), "--out", str(tmp_path / "x"), "--thumbnail-size", "0"]) == 2
    err = capsys.readouterr().err
    assert "--thumbnail-size must be a positive number of pixels, got 0" in err


def test_flagged_chunk_is_the_block(run):
    from nucseg.slide.htmlreport import flagged_chunks

    report = json.loads((run / "report.json").read_text())
    flags = flagged_chunks(report)
    rows, cols = BLOCK
    hit = [f for f in flags if f["x"] <= cols.start and f["y"] <= rows.start
           and cols.stop <= f["x"] + f["w"] and rows.stop <= f["y"] + f["h"]]  # fmt: skip
    assert [f["chunk"] for f in hit] == ["r0003_c0000"]
    assert any("a nucleus of" in w for w in hit[0]["warnings"])
    for flag in flags:  # inside the slide, on the chunk grid
        assert flag["x"] % 256 == 0 and flag["y"] % 256 == 0
        assert flag["x"] + flag["w"] <= SIZE and flag["y"] + flag["h"] <= SIZE


# --- what a folder holds ------------------------------------------------------------------------


def test_find_items_slide_cohort_and_errors(run, tmp_path):
    from nucseg.viewer.outputs import find_items

    (item,) = find_items(run)
    assert item.kind == "slide" and item.mpp == 0.25 and item.slide.is_file()
    assert [i.name for i in find_items(run.parent)] == ["disks"]  # the cohort folder
    with pytest.raises(FileNotFoundError, match="no such folder"):
        find_items(tmp_path / "nothing")
    with pytest.raises(ValueError, match="no nucseg outputs here"):
        find_items(tmp_path)
    moved = tmp_path / "moved"
    shutil.copytree(run, moved / "disks")
    report = json.loads((moved / "disks" / "report.json").read_text())
    report["slide"] = str(tmp_path / "gone" / "disks.tif")
    (moved / "disks" / "report.json").write_text(json.dumps(report))
    with pytest.raises(FileNotFoundError, match="pass --source"):
        find_items(moved)
    (item,) = find_items(moved, source=run.parent.parent)
    assert item.slide == run.parent.parent / "disks.tif"


def test_segment_output_is_shown_with_its_source(tmp_path):
    """`nucseg segment` outputs: items per image, found in --source; outlines and table agree."""
    from viewer_helpers import slide_image, threshold_segmenter

    from nucseg.io import write_png
    from nucseg.pipeline import segment_files
    from nucseg.viewer.outputs import find_items

    images = tmp_path / "images"
    images.mkdir()
    write_png(images / "crop.png", slide_image()[:300, :400])
    segment_files([images / "crop.png"], threshold_segmenter, tmp_path / "seg", progress=False)
    with pytest.raises(ValueError, match="pass --source"):
        find_items(tmp_path / "seg")
    (item,) = find_items(tmp_path / "seg", source=images, mpp=0.25)
    nuclei = item.nuclei()
    csv = pd.read_csv(tmp_path / "seg" / "crop_nuclei.csv")
    assert len(nuclei) == len(csv) > 10
    row = csv.iloc[3]
    found = nuclei.at(row["centroid_col"] + 0.5, row["centroid_row"] + 0.5)
    assert found["id"] == row["label"]
    assert found["area_um2"] == pytest.approx(row["area"] * 0.25**2)


# --- spatial index, outlines, clicks, density ---------------------------------------------------


def test_viewport_query_equals_a_scan_of_the_table(layer):
    """Invariant: the index returns exactly the nuclei whose bounding box meets the box."""
    table = layer.table
    rng = np.random.default_rng(1)
    for _ in range(50):
        x0, y0 = rng.uniform(-50, SIZE, 2)
        x1, y1 = x0 + rng.uniform(1, 600), y0 + rng.uniform(1, 600)
        expected = np.flatnonzero(
            (table["bbox_x0"] <= x1) & (table["bbox_x1"] >= x0)
            & (table["bbox_y0"] <= y1) & (table["bbox_y1"] >= y0)
        )  # fmt: skip
        np.testing.assert_array_equal(layer.query((x0, y0, x1, y1)), expected)


def test_outlines_pack_the_exterior_rings(run, layer):
    """Unsimplified, each packed ring is the GeoJSON outline's exterior without its closing
    point; simplified, the ring keeps its nucleus's area within the tolerance."""
    reference = geojson_shapes(run / "nuclei.geojson")
    box = (100.0, 100.0, 700.0, 500.0)
    layer._rings.cache.clear()
    cold = layer.outlines(box)  # only the rows asked decoded
    layer.prefetch()  # every row group decoded and kept
    assert len(layer._rings.cache) == len(layer._rings.starts) - 1 > 1
    assert layer.outlines(box) == cold
    got = decode(cold)
    assert got["complete"] and got["n"] == len(layer.query(box)) > 50
    assert (got["types"] == 255).all()
    for nucleus, ring in zip(got["ids"], got["rings"], strict=True):
        exterior = shapely.get_coordinates(shapely.get_exterior_ring(reference[int(nucleus)]))
        np.testing.assert_array_equal(ring, exterior[:-1].astype(np.float32))
    simplified = decode(layer.outlines(box, tolerance=2.0))
    for nucleus, ring in zip(simplified["ids"], simplified["rings"], strict=True):
        area = shapely.area(shapely.polygons(ring))
        true = shapely.area(reference[int(nucleus)])
        assert 3 <= len(ring) < len(shapely.get_coordinates(reference[int(nucleus)]))
        assert abs(area - true) <= 2.0 * shapely.length(reference[int(nucleus)])


def test_too_many_nuclei_gives_the_count_only(layer):
    data = layer.outlines((0, 0, SIZE, SIZE), limit=10)
    assert decode(data) == {"n": len(layer), "complete": False} and len(data) == 12


def test_click_finds_the_nucleus_under_the_point(run, layer):
    reference = geojson_shapes(run / "nuclei.geojson")
    for nucleus, shape in list(reference.items())[::25]:
        point = shapely.get_coordinates(shapely.point_on_surface(shape))[0]
        found = layer.at(*point)
        assert found["id"] == nucleus and isinstance(found["id"], int)
        assert found["area_um2"] > 0
    assert layer.at(5.0, 5.0) is None  # background


def test_density_counts_every_nucleus(layer):
    from nucseg.viewer.density import density_map

    counts = layer.density((SIZE, SIZE), cell=128)
    assert counts.shape == (8, 8) and counts.sum() == len(layer)
    picture = density_map(layer, (SIZE, SIZE), mpp=0.25)
    assert picture["cell"] == 128 and picture["unit"] == "nuclei per mm²"
    assert Image.open(io.BytesIO(picture["png"])).size == (8, 8)


def test_types_are_coded_when_present(run, tmp_path):
    """A `type` column (added by the nucleus-type classifier) colours the outlines."""
    table = pq.read_table(run / "nuclei.parquet")
    names = np.array(["epithelial", "inflammatory", "spindle", "other", "unknown"])
    kinds = names[np.arange(table.num_rows) % 5]
    pq.write_table(table.append_column("type", pa.array(kinds.tolist())), tmp_path / "t.parquet")
    layer = NucleiLayer.from_parquet(tmp_path / "t.parquet")
    got = decode(layer.outlines((0, 0, SIZE, SIZE)))
    expected = np.array([0, 1, 2, 3, 255])[(got["ids"] - 1) % 5]
    np.testing.assert_array_equal(got["types"], expected)


# --- tiles ----------------------------------------------------------------------------------------


def test_deep_zoom_tiles_are_the_slide(run):
    from nucseg.slide.reader import open_slide
    from nucseg.viewer.tiles import TileSource

    reader = open_slide(run.parent.parent / "disks.tif")
    source = TileSource(reader)
    size = ET.fromstring(source.dzi()).find("{*}Size").attrib
    assert (int(size["Width"]), int(size["Height"])) == (SIZE, SIZE)
    top = source.generator.level_count - 1
    assert top == int(np.ceil(np.log2(SIZE)))
    tile = np.asarray(Image.open(io.BytesIO(source.tile(top, 1, 1))))
    expected = reader.read_region(253, 253, 256, 256)  # overlap of 1 on each side
    assert tile.shape == expected.shape
    assert np.abs(tile.astype(int) - expected).mean() < 4  # JPEG
    assert source.tile(top, 1, 1) is source.tile(top, 1, 1)  # cached
    coarse = np.asarray(Image.open(io.BytesIO(source.tile(0, 0, 0))))
    assert coarse.shape == (1, 1, 3)
    # levels of 1 to 128 pixels: a tile each; 256: 2 x 2 tiles of 254; 512: 3 x 3; 1024: not
    assert source.warm(side=512) == 8 + 4 + 9
    assert len(source._cache) == 8 + 4 + 9 + 1  # and the top level's tile read above
    with pytest.raises(ValueError, match="no tile"):
        source.tile(top, 9, 0)
    with pytest.raises(ValueError, match="no Deep Zoom level"):
        source.tile(top + 1, 0, 0)


def test_an_overview_level_serves_coarse_tiles(tmp_path, monkeypatch):
    """A slide whose coarsest level is larger than the overview side gets an in-memory level;
    coarse tiles come from it and agree with the slide."""
    from nucseg.slide.reader import open_slide
    from nucseg.slide.synthetic import write_slide
    from nucseg.viewer import tiles

    monkeypatch.setattr(tiles, "OVERVIEW_SIDE", 128)
    rng = np.random.default_rng(0)
    image = np.kron(
        rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), np.ones((64, 64, 1), np.uint8)
    )
    path = write_slide(tmp_path / "s.tif", image.shape[:2], image, mpp=0.5, levels=2,
                       compression="zlib")  # fmt: skip
    reader = open_slide(path)
    reads = []
    read = reader.read_region
    monkeypatch.setattr(reader, "read_region", lambda *a: reads.append(a) or read(*a))
    source = tiles.TileSource(reader, tile_format="webp", quality=100)
    assert source.slide.level_count == 3 and source.slide.level_dimensions[-1] == (128, 128)
    for level in range(source.generator.level_count - 3):  # 128 x 128 and coarser
        source.tile(level, 0, 0)
    assert reads == [(0, 0, 512, 512, 1)]  # the coarsest level, read once
    tile = np.asarray(Image.open(io.BytesIO(source.tile(level, 0, 0))).convert("RGB"))
    block = image[::8, ::8]
    assert tile.shape == block.shape and np.median(np.abs(tile.astype(int) - block)) <= 2


# --- server and command ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(run):
    from nucseg.viewer import start

    httpd, url = start(run.parent)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield url
    httpd.shutdown()
    httpd.server_close()


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, b""


def test_server_routes(server, layer):
    assert server.startswith("http://127.0.0.1:")
    status, body = get(server + "api/items")
    listing = json.loads(body)
    assert status == 200 and listing["items"] == [{"name": "disks", "title": "disks"}]
    status, body = get(server + "api/disks/info")
    item = json.loads(body)
    assert item == listing["first"]
    assert status == 200 and item["nuclei"] == len(layer) and item["types"] is None
    assert item["flags"] and item["report"] == "/files/disks/report.html"
    assert get(server)[0] == get(server + "osd/openseadragon.min.js")[0] == 200
    assert get(server + "osd/images/home_rest.png")[0] == 200
    assert get(server + "dzi/disks.dzi")[1].startswith(b"<Image")
    status, tile = get(server + "dzi/disks_files/10/0_0.jpeg")
    assert status == 200 and Image.open(io.BytesIO(tile)).format == "JPEG"
    status, data = get(server + "api/disks/nuclei?x0=0&y0=0&x1=300&y1=300&tol=0")
    assert decode(data)["n"] == len(layer.query((0, 0, 300, 300)))
    status, data = get(server + "api/disks/nuclei?x0=0&y0=0&x1=300&y1=300&limit=0")
    assert decode(data) == {"n": len(layer.query((0, 0, 300, 300))), "complete": False}
    nucleus = json.loads(get(server + "api/disks/at?x=30&y=30")[1])["nucleus"]
    assert nucleus == layer.at(30, 30)
    assert get(server + "files/disks/report.html")[1].startswith(b"<!doctype html>")
    for bad in (
        "nope",
        "dzi/other.dzi",
        "api/disks/nothing",
        "static/../server.py",
        "osd/../../../package.json",
        "dzi/disks_files/99/0_0.jpeg",
        "api/other/at?x=1",
    ):
        assert get(server + bad)[0] == 404, bad


def test_view_errors_are_one_line(run, tmp_path, capsys, monkeypatch):
    assert main(["view", str(tmp_path / "missing"), "--no-browser"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"nucseg: error: {tmp_path / 'missing'}: no such folder (give OUT/<slide> or OUT)"
    ]
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["view", str(run), "--no-browser", "--port", str(port)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"nucseg: error: cannot listen on 127.0.0.1:{port}: ")
    from nucseg.viewer import assets

    monkeypatch.setenv("NUCSEG_OPENSEADRAGON", str(tmp_path))
    monkeypatch.setattr(assets, "_CHECKOUT", tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["view", str(run), "--no-browser"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert (
        line.startswith("nucseg: error: the viewer needs OpenSeadragon") and "make install" in line
    )


def test_view_command_prints_the_address_and_serves(run):
    """`nucseg view OUT --no-browser --port 0`: one line with the URL, the page answers; Ctrl-C
    stops it with status 0."""
    import signal

    command = [sys.executable, "-m", "nucseg.cli", "view", str(run), "--no-browser", "--port", "0"]

    # SIGINT's default action in the child, whatever this process inherited (a shell starts a
    # background job with SIGINT ignored, and a child would inherit that and never stop)
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=default_sigint)  # fmt: skip
    try:
        line = process.stdout.readline()
        assert line.startswith("nucseg view: http://127.0.0.1:"), line
        url = line.split()[2]
        assert json.loads(get(url + "api/items")[1])["items"][0]["name"] == "disks"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0


# --- reports --------------------------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def test_reports_are_self_contained(run):
    """report.html (written by the run) and cohort.html: every picture embedded, no script, no
    stylesheet or other file to fetch; the slide's lists its flagged chunk with a picture."""
    from nucseg.slide.htmlreport import FLAG_ACTION, flagged_chunks, write_cohort_report

    write_cohort_report(run.parent)
    report = json.loads((run / "report.json").read_text())
    for path in (run / "report.html", run.parent / "cohort.html"):
        parser = _Links()
        text = path.read_text()
        parser.feed(text)
        tags = [t for t, _ in parser.tags]
        assert "script" not in tags and "link" not in tags and "iframe" not in tags
        sources = [a["src"] for t, a in parser.tags if t == "img"]
        assert sources and all(s.startswith("data:image/") for s in sources)
        links = [a["href"] for t, a in parser.tags if t == "a"]
        assert all(not h.startswith(("http:", "https:", "//")) for h in links)
        assert path.stat().st_size < 5_000_000
    text = (run / "report.html").read_text()
    flags = flagged_chunks(report)
    assert text.count('alt="chunk ') == len(flags) > 0 and text.count(FLAG_ACTION) == len(flags)
    assert f"{report['nuclei']:,}" in text and "weights SHA-256" in text
    assert '<a href="disks/report.html">' in (run.parent / "cohort.html").read_text()


def test_thin_keeps_rings_in_order_and_whole_when_small():
    """Worked by hand: a 4-point square in cells of 10 stays (fewer than 3 would be left); a
    ring of 6 points where points 2 and 3 share the cell of point 1 loses them."""
    from nucseg.viewer.nuclei import thin

    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    ring = np.array([[0, 0], [25, 0], [26, 1], [27, 2], [25, 25], [0, 25]], np.float32)
    xy, starts = thin(np.concatenate([square, ring]), np.array([0, 4, 10]), 10.0)
    np.testing.assert_array_equal(starts, [0, 4, 8])
    np.testing.assert_array_equal(xy[:4], square)
    np.testing.assert_array_equal(xy[4:], ring[[0, 1, 4, 5]])
