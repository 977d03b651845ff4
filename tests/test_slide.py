"""Whole slides: formats and mpp, tissue, exact seams, outputs, resume after kill -9, CLI errors.

Synthetic slides are written with tifffile (nucseg.slide.synthetic); the segmenter of most tests is
a plain threshold + connected components, which is exact and local, so any difference between a
chunked run and the truth comes from the engine.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import shapely
import tifffile
from scipy import ndimage as ndi
from shapely.geometry import shape

from nucseg.slide import open_slide, segment_slide
from nucseg.slide.reader import ImageReader, OpenSlideReader, TiffReader
from nucseg.slide.synthetic import write_slide


def threshold_segmenter(image: np.ndarray) -> np.ndarray:
    """Dark pixels, 4-connected components: exact on the synthetic nuclei."""
    return ndi.label(image.mean(axis=2) < 128)[0].astype(np.int32)


def disks_slide(
    size: int, centres: list[tuple[int, int]], radius: int, *, background=(225, 170, 215)
) -> tuple[np.ndarray, np.ndarray]:
    """Pink (tissue) slide with dark disks at ``centres`` (row, col), and its true labels."""
    rows, cols = np.mgrid[:size, :size]
    truth = np.zeros((size, size), dtype=np.int32)
    for k, (r, c) in enumerate(centres, start=1):
        truth[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = k
    image = np.empty((size, size, 3), dtype=np.uint8)
    image[:] = background
    image[truth > 0] = (60, 30, 120)
    return image, truth


def seam_centres(size: int, chunk: int) -> list[tuple[int, int]]:
    """Centres on every chunk seam (vertical, horizontal) and every seam crossing."""
    seams = list(range(chunk, size, chunk))
    mids = [chunk // 2 + k * chunk for k in range(size // chunk)]
    centres = [(s, s2) for s in seams for s2 in seams]  # crossings
    centres += [(s, m) for s in seams for m in mids] + [(m, s) for s in seams for m in mids]
    return centres


@pytest.fixture(scope="module")
def seam_slide(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seams")
    size, chunk = 768, 256
    centres = seam_centres(size, chunk)
    image, truth = disks_slide(size, centres, radius=12)
    path = write_slide(folder / "seams.tif", image.shape[:2], image, mpp=0.25, compression="zlib")
    return path, truth, chunk


def _run(path, out, **options):
    options = {"segmenter": threshold_segmenter, "progress": False, **options}
    return segment_slide(path, out, **options)


# --- formats and mpp -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flavour", "name", "reader", "mpp"),
    [
        ("tiff", "a.tif", OpenSlideReader, 0.2527),
        ("svs", "a.svs", OpenSlideReader, 0.499),
        ("ome", "a.ome.tif", TiffReader, 0.25),
    ],
)
def test_formats_read_regions_and_mpp(tmp_path, flavour, name, reader, mpp):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (600, 700, 3), dtype=np.uint8)
    path = write_slide(tmp_path / name, image.shape[:2], image, mpp=mpp, flavour=flavour,
                       compression="zlib")  # fmt: skip
    with open_slide(path) as slide:
        assert isinstance(slide, reader)
        assert slide.mpp == pytest.approx(mpp, rel=1e-4)
        assert slide.dimensions == (700, 600)
        assert len(slide.levels) == 3 and slide.downsamples[2] == pytest.approx(4, rel=0.01)
        np.testing.assert_array_equal(slide.read_region(123, 45, 300, 200), image[45:245, 123:423])
        outside = slide.read_region(650, 550, 100, 100)  # half outside: white there
        np.testing.assert_array_equal(outside[:50, :50], image[550:, 650:])
        assert (outside[50:] == 255).all() and (outside[:, 50:] == 255).all()


def test_plain_image_and_missing_mpp(tmp_path):
    image = np.zeros((50, 60, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "small.tif", image)
    with open_slide(tmp_path / "small.tif") as slide:
        assert isinstance(slide, ImageReader) and slide.mpp is None
    with pytest.raises(ValueError, match="no microns per pixel.*--mpp"):
        _run(tmp_path / "small.tif", tmp_path / "out")


def test_cli_without_mpp_fails_before_loading_the_model(tmp_path):
    image = np.full((300, 300, 3), 200, dtype=np.uint8)
    path = write_slide(tmp_path / "nompp.tif", image.shape[:2], image, mpp=None)
    code = textwrap.dedent(f"""
        import sys
        from nucseg.cli import main
        rc = main(["slide", {str(path)!r}, "--out", {str(tmp_path / "out")!r}, "--no-progress"])
        print("torch loaded:", "torch" in sys.modules)
        sys.exit(rc)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "nucseg: error:" in done.stderr and "nompp.tif" in done.stderr
    assert "--mpp" in done.stderr
    assert "torch loaded: False" in done.stdout
    assert "failed" in (tmp_path / "out" / "slides.csv").read_text()


@pytest.mark.parametrize(
    "option", [["--chunk", "0"], ["--halo", "-1"], ["--overlap", "1.5"], ["--tile", "0"]]
)
def test_cli_rejects_bad_options_before_any_slide(tmp_path, capsys, option):
    from nucseg.cli import main

    assert main(["slide", "missing.svs", "--out", str(tmp_path), *option]) == 2
    assert capsys.readouterr().err.startswith(f"nucseg: error: {option[0]}")
    assert not (tmp_path / "slides.csv").exists()


# --- seams and outputs -----------------------------------------------------------------------


def test_nuclei_across_every_seam_found_once_and_whole(seam_slide, tmp_path):
    path, truth, chunk = seam_slide
    report = _run(path, tmp_path, chunk=chunk, halo=32)
    table = pd.read_parquet(tmp_path / "seams" / "nuclei.parquet")
    n_true = int(truth.max())
    assert report["nuclei"] == len(table) == n_true
    assert report["cut_nuclei"] == 0
    # each true disk is matched by exactly one nucleus of exactly its area (0.25 um/px)
    true_area = np.bincount(truth.ravel())[1:] * 0.25**2
    rows = np.floor(table["centroid_y"].to_numpy()).astype(int)
    cols = np.floor(table["centroid_x"].to_numpy()).astype(int)
    matched = truth[rows, cols]
    assert sorted(matched.tolist()) == list(range(1, n_true + 1))
    np.testing.assert_allclose(table["area_um2"].to_numpy(), true_area[matched - 1])
    # the label image equals the truth up to renumbering
    labels = tifffile.imread(tmp_path / "seams" / "labels.ome.tif", level=0)
    assert labels.shape == truth.shape
    pairs = set(zip(labels[truth > 0].tolist(), truth[truth > 0].tolist(), strict=True))
    assert len(pairs) == n_true and ((labels > 0) == (truth > 0)).all()


def test_a_halo_smaller_than_the_nuclei_is_reported(seam_slide, tmp_path):
    path, truth, chunk = seam_slide
    report = _run(path, tmp_path, chunk=chunk, halo=4, labels=False)
    assert report["cut_nuclei"] > 0  # disks of radius 12 reach past a 4-pixel halo


def test_outputs_agree_and_are_valid(seam_slide, tmp_path):
    path, truth, chunk = seam_slide
    report = _run(path, tmp_path, chunk=chunk, halo=32, gzip=True)
    folder = tmp_path / "seams"
    table = pd.read_parquet(folder / "nuclei.parquet")
    with gzip.open(folder / "nuclei.geojson.gz", "rt") as fh:
        features = json.load(fh)["features"]
    geometries = [shape(f["geometry"]) for f in features]
    assert all(g.is_valid for g in geometries)
    with tifffile.TiffFile(folder / "labels.ome.tif") as tif:
        levels = tif.series[0].levels
        labels = levels[0].asarray()
        assert len(levels) >= 3
        assert 'PhysicalSizeX="0.25"' in tif.ome_metadata
    assert len(table) == len(features) == len(np.unique(labels)) - 1 == report["nuclei"]
    # measurements agree with the geometry (level-0 pixels, 0.25 um/px)
    areas = np.array([g.area for g in geometries]) * 0.25**2
    np.testing.assert_allclose(areas, table["area_um2"].to_numpy())
    ids = [f["properties"]["measurements"]["id"] for f in features]
    assert ids == table["id"].tolist() == list(range(1, len(table) + 1))
    for name in ("tissue.png", "thumbnail_overlay.png", "report.json"):
        assert (folder / name).is_file()
    assert not (folder / "chunks").exists()
    with pytest.raises(FileExistsError, match="--overwrite"):
        _run(path, tmp_path, chunk=chunk, halo=32, gzip=True)


def test_downsampled_level_maps_back_to_level0(seam_slide, tmp_path):
    """A slide at twice the model's resolution is read from level 1; outputs stay level-0."""
    path, truth, chunk = seam_slide
    report = _run(path, tmp_path, chunk=chunk // 2, halo=16, mpp=0.125)
    assert report["level_read"] == 1 and report["scale"] == 2.0
    table = pd.read_parquet(tmp_path / "seams" / "nuclei.parquet")
    assert len(table) == truth.max()
    with tifffile.TiffFile(tmp_path / "seams" / "labels.ome.tif") as tif:
        labels = tif.series[0].levels[0].asarray()
        assert 'PhysicalSizeX="0.125"' in tif.ome_metadata
    assert labels.shape == truth.shape
    overlap = ((labels > 0) & (truth > 0)).sum() / (truth > 0).sum()
    assert overlap > 0.9  # a 2x coarser segmentation, upsampled
    rows = np.floor(table["centroid_y"].to_numpy()).astype(int)
    cols = np.floor(table["centroid_x"].to_numpy()).astype(int)
    assert sorted(truth[rows, cols].tolist()) == list(range(1, int(truth.max()) + 1))


def test_tissue_and_roi_restrict_the_chunks(tmp_path):
    size = 1024
    centres = [(100, 100), (150, 400), (900, 900)]
    image, truth = disks_slide(size, centres, radius=10, background=(245, 245, 245))
    image[40:460, 40:460] = np.where(truth[40:460, 40:460, None] > 0, image[40:460, 40:460], 200)
    image[700:1000, 700:1000] = np.where(
        truth[700:1000, 700:1000, None] > 0, image[700:1000, 700:1000], 200
    )
    path = write_slide(tmp_path / "t.tif", (size, size), image, mpp=0.25, compression="zlib")
    report = _run(path, tmp_path / "a", chunk=256, halo=32)
    assert report["chunks"] == 8 and report["nuclei"] == 3  # 4 chunks per tissue piece
    assert 0.012 < report["tissue_mm2"] < 0.022  # 420^2 + 300^2 px at 0.25 um: 0.0167 mm2
    report = _run(path, tmp_path / "b", chunk=256, halo=32, roi=[(0, 0, 300, 300)])
    assert report["nuclei"] == 1 and report["chunks"] <= 4
    table = pd.read_parquet(tmp_path / "b" / "t" / "nuclei.parquet")
    annotation = {
        "type": "Feature",
        "geometry": shapely.geometry.mapping(shapely.box(0, 0, 300, 300)),
    }
    (tmp_path / "roi.geojson").write_text(json.dumps([annotation]))  # QuPath's list of features
    report = _run(path, tmp_path / "c", chunk=256, halo=32, roi_geojson=tmp_path / "roi.geojson")
    assert report["nuclei"] == 1
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "c" / "t" / "nuclei.parquet"), table)
    assert shapely.box(0, 0, 300, 300).contains(
        shapely.Point(table["centroid_x"][0], table["centroid_y"][0])
    )


def test_slide_without_tissue_gives_empty_outputs(tmp_path):
    glass = np.full((300, 500, 3), 245, dtype=np.uint8)
    path = write_slide(tmp_path / "glass.tif", glass.shape[:2], glass, mpp=0.25)
    report = _run(path, tmp_path)
    assert report["nuclei"] == 0 and report["chunks"] == 0 and report["tissue_mm2"] == 0
    assert len(pd.read_parquet(tmp_path / "glass" / "nuclei.parquet")) == 0
    assert json.loads((tmp_path / "glass" / "nuclei.geojson").read_text())["features"] == []
    assert not tifffile.imread(tmp_path / "glass" / "labels.ome.tif").any()


# --- resume ----------------------------------------------------------------------------------


def test_resume_after_kill_gives_the_same_outputs(seam_slide, tmp_path):
    from nucseg.slide.run import finish_workers

    path, _, chunk = seam_slide
    options = dict(chunk=chunk // 2, halo=32)
    _run(path, tmp_path / "full", **options)
    code = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from scipy import ndimage as ndi
        from nucseg.slide import segment_slide
        calls = [0]
        def segment(image):
            calls[0] += 1
            if calls[0] == 12:
                os.kill(os.getpid(), signal.SIGKILL)
            return ndi.label(image.mean(axis=2) < 128)[0].astype(np.int32)
        segment_slide({str(path)!r}, {str(tmp_path / "killed")!r}, segmenter=segment,
                      progress=False, chunk={options["chunk"]}, halo={options["halo"]})
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    folder = tmp_path / "killed" / "seams"
    done_chunks = len(list((folder / "chunks").glob("*.parquet")))
    # killed while segmenting the 12th chunk: of the 11 before, the last finish_workers() may
    # still have been post-processed in their threads (1 on up to 7 cores, up to 4 on more)
    assert 11 - finish_workers() <= done_chunks <= 11
    assert not (folder / "nuclei.parquet").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        _run(path, tmp_path / "killed", **options)
    report = _run(path, tmp_path / "killed", resume=True, **options)
    assert report["chunks_resumed"] == done_chunks
    full = tmp_path / "full" / "seams"
    pd.testing.assert_frame_equal(
        pd.read_parquet(full / "nuclei.parquet"), pd.read_parquet(folder / "nuclei.parquet")
    )
    assert (full / "nuclei.geojson").read_bytes() == (folder / "nuclei.geojson").read_bytes()
    np.testing.assert_array_equal(
        tifffile.imread(full / "labels.ome.tif"), tifffile.imread(folder / "labels.ome.tif")
    )


# --- prediction on chunks --------------------------------------------------------------------


def test_tissue_maps_equal_predict_maps_and_skip_glass():
    from nucseg.infer import Predictor
    from nucseg.io import read_image
    from nucseg.pipeline import resolve_model
    from nucseg.slide.engine import predict_tissue_maps, stained

    predictor = Predictor.load(resolve_model("stain-soup"), tile=256, overlap=0.25)  # normalises
    # 320 x 448: tile_grid at 25 % and spread_grid with 64 pixels give the same tiles
    image = read_image("examples/monuseg-breast-crop/images/TCGA-A7-A13E-crop.png")[:320, :448]
    assert image.shape[:2] == (320, 448)
    expected = predictor.predict_maps(image)
    normalised = predictor.normaliser.transform(image)
    np.testing.assert_allclose(
        predict_tissue_maps(predictor, normalised, tissue=image), expected, atol=1e-6
    )
    glass = np.full((300, 600, 3), 240, dtype=np.uint8)
    maps = predict_tissue_maps(predictor, glass, tissue=glass)
    assert maps.shape[:2] == glass.shape[:2] and (maps[..., 0] == 1).all()
    # black (a label, a pen mark, a black fill) is not tissue either; tissue beside it still is
    black = np.zeros((300, 600, 3), dtype=np.uint8)
    assert (predict_tissue_maps(predictor, black, tissue=black)[..., 0] == 1).all()
    black[:, 300:] = image[:300, :300]
    maps = predict_tissue_maps(predictor, black, tissue=black)
    assert (maps[:, :44, 0] == 1).all() and (maps[:, 300:, 0] < 0.5).any()
    # the stained() mask, when the caller has it, in place of the pixels: the same maps
    from_mask = predict_tissue_maps(predictor, black, tissue=stained(black))
    np.testing.assert_array_equal(from_mask, maps)
    with pytest.raises(ValueError, match="tissue covers"):
        predict_tissue_maps(predictor, black, tissue=stained(black)[:10])


def test_stained_pixels_exclude_glass_and_black():
    from nucseg.slide.engine import BLACK_LEVEL, stained

    pixels = np.array([[[240, 240, 240], [0, 0, 0], [BLACK_LEVEL - 1] * 3, [200, 120, 210],
                        [60, 30, 120], [20, 10, BLACK_LEVEL]]], dtype=np.uint8)  # fmt: skip
    assert stained(pixels).tolist() == [[False, False, False, True, True, True]]


def test_segment_warns_when_the_image_scale_differs_from_the_model(tmp_path, capsys):
    from nucseg.cli import main
    from nucseg.slide.cli import scale_warnings

    image = np.full((64, 64, 3), 200, dtype=np.uint8)
    tifffile.imwrite(
        tmp_path / "x20.tif", image, resolution=(2e4, 2e4), resolutionunit="CENTIMETER"
    )
    tifffile.imwrite(tmp_path / "plain.tif", image)
    paths = [tmp_path / "x20.tif", tmp_path / "plain.tif"]
    (line,) = scale_warnings(paths, mpp=None, model=None)  # 0.5 um/px against 0.25
    assert "x20.tif" in line and "0.5 um/px" in line and "--mpp" in line
    assert scale_warnings(paths, mpp=0.27, model=None) == []  # --mpp overrides, within 25 %
    assert len(scale_warnings(paths, mpp=0.4, model=None)) == 2
    assert (
        main(["segment", *map(str, paths), "--out", str(tmp_path / "out"), "--method", "otsu"]) == 0
    )
    warnings = [x for x in capsys.readouterr().err.splitlines() if x.startswith("nucseg: warning:")]
    assert sum("um/px" in line for line in warnings) == 1  # beside the quality warnings


def test_chunk_tasks_reproduce_the_loop(seam_slide, tmp_path):
    """A worker's chunk_task, given only the chunks folder and an index, writes the same files."""
    import shutil

    from nucseg.slide.engine import SlidePlan, chunk_name, chunk_task

    path, _, chunk = seam_slide
    _run(path, tmp_path / "loop", segmenter=None, method="otsu", chunk=chunk, keep_chunks=True)
    reference = tmp_path / "loop" / "seams" / "chunks"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    shutil.copy(reference / "plan.json", tasks)
    plan = SlidePlan.from_json((tasks / "plan.json").read_text())
    for index in reversed(plan.chunks):  # any order
        assert chunk_task(tasks, index, method="otsu")["chunk"] == chunk_name(index)
    assert chunk_task(tasks, plan.chunks[0], method="otsu")["skipped"]
    assert sorted(p.name for p in reference.glob("r*")) == sorted(p.name for p in tasks.glob("r*"))
    for file in sorted(reference.glob("r*")):
        if file.suffix == ".npy":
            np.testing.assert_array_equal(np.load(file), np.load(tasks / file.name))
        else:
            pd.testing.assert_frame_equal(pd.read_parquet(file), pd.read_parquet(tasks / file.name))


def test_tissue_box_bounds_the_tissue_with_a_margin():
    from nucseg.slide.engine import tissue_box

    image = np.full((100, 120, 3), 240, dtype=np.uint8)
    assert tissue_box(image, margin=5) is None
    image[10:20, 100:110] = (150, 60, 150)
    assert tissue_box(image, margin=5) == (slice(5, 25), slice(95, 115))
    assert tissue_box(image, margin=50) == (slice(0, 70), slice(50, 120))


@pytest.mark.parametrize("seed", range(6))
def test_tissue_piece_boxes_hold_every_tissue_pixel_once_with_their_margin(seed):
    from nucseg.slide.tissue import _mask_box, mask_boxes

    rng = np.random.default_rng(seed)
    mask = np.zeros((700, 900), dtype=bool)
    for _ in range(int(rng.integers(1, 7))):  # blobs of all sizes, some touching the edges
        r, c = rng.integers(-40, 700), rng.integers(-40, 900)
        h, w = rng.integers(1, 250, size=2)
        mask[max(r, 0) : r + h, max(c, 0) : c + w] = True
    margin = int(rng.choice([0, 16, 64]))
    boxes = mask_boxes(mask, margin=margin)
    covered = np.zeros(mask.shape, dtype=np.int32)
    for rows, cols in boxes:
        covered[rows, cols] += 1
        inner = mask[rows, cols]  # the margin: no tissue nearer its edge, except the image's
        tight = _mask_box(inner)
        assert tight is not None
        assert tight[0].start == min(margin, rows.start + tight[0].start)
        assert tight[1].start == min(margin, cols.start + tight[1].start)
        assert rows.stop - rows.start - tight[0].stop == min(
            margin, 700 - rows.start - tight[0].stop
        )
        assert cols.stop - cols.start - tight[1].stop == min(
            margin, 900 - cols.start - tight[1].stop
        )
    assert covered.max() <= 1  # boxes never overlap
    assert np.all(covered[mask] == 1)  # and every tissue pixel is in one
    if len(boxes) == 1:
        assert boxes[0] == _mask_box(mask, margin=margin)


@pytest.mark.parametrize(("gap", "boxes"), [(100, 1), (127, 1), (200, 2), (330, 2)])
def test_pieces_share_a_box_only_where_their_margins_overlap(gap, boxes):
    from nucseg.slide.tissue import _mask_box, mask_boxes

    mask = np.zeros((200, 800), dtype=bool)
    mask[50:100, 50:100] = mask[50:100, 100 + gap : 150 + gap] = True
    # one box where the grown boxes overlap (less than 2 x 64 pixels of glass between the
    # pieces); two where far apart (on the 32-pixel grid, up to a cell or two nearer share one)
    assert len(mask_boxes(mask, margin=64)) == boxes
    specks = np.zeros((2000, 2000), dtype=bool)
    specks[::150, ::150] = True  # 196 specks: one box, not 196
    assert mask_boxes(specks, margin=64) == [_mask_box(specks, margin=64)]


def test_a_chunk_of_separate_pieces_segments_each_piece_as_alone(data_root):
    """Two tissue crops in the corners of a glass chunk: segmented in two boxes, each piece's
    nuclei and types as when the piece is segmented alone, numbered one box after the other."""
    from nucseg import datasets
    from nucseg.pipeline import resolve_model
    from nucseg.slide.engine import TISSUE_MARGIN, ChunkSegmenter, engine_predictor, tissue_boxes
    from nucseg.slide.tissue import stained

    image = np.full((1400, 1400, 3), 242, dtype=np.uint8)
    sample = datasets.load_sample("monuseg", "TCGA-18-5592-01Z-00-DX1")
    image[100:400, 100:400] = sample.image[:300, :300]
    image[900:1300, 800:1300] = sample.image[500:900, 400:900]
    boxes = tissue_boxes(stained(image))
    assert len(boxes) == 2
    segmenter = ChunkSegmenter(engine_predictor(resolve_model("default")), None)
    labels, types = segmenter.typed_labels(image.shape[:2], segmenter.predict(image))
    first = 0
    for rows, cols in boxes:
        assert rows.start == 100 - TISSUE_MARGIN or rows.start == 900 - TISSUE_MARGIN
        alone, alone_types = segmenter.typed_labels(
            (rows.stop - rows.start, cols.stop - cols.start), segmenter.predict(image[rows, cols])
        )
        part = labels[rows, cols]
        np.testing.assert_array_equal(part > 0, alone > 0)
        np.testing.assert_array_equal(np.where(alone > 0, alone + first, 0), part)
        rows_of = np.searchsorted(types.labels, alone_types.labels + first)
        np.testing.assert_allclose(types.probs[rows_of], alone_types.probs)
        first = int(part.max())
    assert np.count_nonzero(labels[:, 450:750]) == 0 and first == labels.max() > 50
    assert types.labels.tolist() == list(range(1, first + 1))


# --- quality flags per chunk -----------------------------------------------------------------


def test_chunk_quality_flags_reach_the_report(seam_slide, tmp_path, caplog):
    """A segmenter that labels every pixel one nucleus is flagged in every tissue chunk: the
    figures are in report.json and one warning line says how many chunks raised it."""
    path, _, chunk = seam_slide

    def everything(image):
        return np.ones(image.shape[:2], dtype=np.int32)

    with caplog.at_level(logging.WARNING, logger="nucseg.slide.run"):
        report = segment_slide(path, tmp_path, segmenter=everything, progress=False, chunk=chunk)
    quality = report["quality"]
    assert quality["chunks_assessed"] == report["chunks"] > 0
    assert quality["chunks_flagged"] == quality["chunks_assessed"]
    assert any(kind.startswith("nuclei cover") for kind in quality["flags"])
    lines = [
        r.getMessage() for r in caplog.records if "tissue chunks: nuclei cover" in r.getMessage()
    ]
    assert len(lines) == 1 and f"{quality['chunks_assessed']} of " in lines[0]
    clean = _run(path, tmp_path / "clean", chunk=chunk)["quality"]
    assert clean["chunks_assessed"] == report["chunks"] and clean["chunks_flagged"] == 0


def test_several_finishing_workers_write_the_same_outputs(seam_slide, tmp_path, monkeypatch):
    """Chunks post-processed side by side (NUCSEG_FINISH_WORKERS) give the outputs of one."""
    from nucseg.slide.run import finish_workers

    path, _, chunk = seam_slide
    _run(path, tmp_path / "one", chunk=chunk, halo=32)
    monkeypatch.setenv("NUCSEG_FINISH_WORKERS", "3")
    assert finish_workers() == 3
    _run(path, tmp_path / "three", chunk=chunk, halo=32)
    one, three = tmp_path / "one" / "seams", tmp_path / "three" / "seams"
    pd.testing.assert_frame_equal(
        pd.read_parquet(one / "nuclei.parquet"), pd.read_parquet(three / "nuclei.parquet")
    )
    assert (one / "nuclei.geojson").read_bytes() == (three / "nuclei.geojson").read_bytes()
    np.testing.assert_array_equal(
        tifffile.imread(one / "labels.ome.tif"), tifffile.imread(three / "labels.ome.tif")
    )
    monkeypatch.setenv("NUCSEG_FINISH_WORKERS", "0")
    with pytest.raises(ValueError, match="NUCSEG_FINISH_WORKERS must be a positive integer"):
        finish_workers()


def test_bundled_model_on_a_real_crop_loads_beside_the_stain_fit(data_root, tmp_path):
    """The model path (network built in a thread while the stain statistics are fitted) finds
    the nuclei of a real MoNuSeg crop, records the weights and the accepted stain estimate, and
    counts as many nuclei as the engine's segmenter on the same pixels with the same statistics."""
    from nucseg import datasets
    from nucseg.pipeline import resolve_model
    from nucseg.slide.engine import ChunkSegmenter, engine_predictor
    from nucseg.slide.run import _sha256

    sample = datasets.load_sample("monuseg", "TCGA-18-5592-01Z-00-DX1")
    image = np.ascontiguousarray(sample.image[:512, :512])
    path = write_slide(tmp_path / "crop.tif", image.shape[:2], image, mpp=0.25, compression="zlib")
    # the bundled model that normalises (the default has no normaliser: nothing to fit)
    report = segment_slide(path, tmp_path / "out", model="stain-soup", progress=False)
    folder = resolve_model("stain-soup")
    assert report["model"]["sha256"] == _sha256(folder / "model.safetensors")
    assert report["stain"]["normaliser"] == "macenko" and report["stain"]["source"]["accepted"]
    assert report["predict"]["overlap"] == 8 / 256  # the slide's overlap (the model's: 0.25)
    assert report["runtime"]["backend"] in ("torch", "openvino")  # what ran, as resolved
    assert report["runtime"]["precision"] in ("bf16", "fp32", "int8")
    predictor = engine_predictor(folder, overlap=report["predict"]["overlap"])
    labels = ChunkSegmenter(predictor, report["stain"]["source"])(image)
    assert report["nuclei"] == labels.max() > 50


# --- issue 29: what a user can trust -----------------------------------------------------------


def grid_slide(path, *, spacing=32, radius=8, size=1024, mpp=0.25):
    """Dark disks on a regular grid (over 200 of them, for the slide-level scale check)."""
    centres = [(r, c) for r in range(24, size - 24, spacing) for c in range(24, size - 24, spacing)]
    image, truth = disks_slide(size, centres, radius)
    return write_slide(path, image.shape[:2], image, mpp=mpp, compression="zlib"), truth


def test_black_is_not_tissue_and_no_tissue_is_said(tmp_path, caplog):
    from nucseg.slide import engine
    from nucseg.slide.tissue import BLACK_LEVEL, tissue_mask

    assert BLACK_LEVEL == engine.BLACK_LEVEL
    black = np.zeros((64, 64, 3), dtype=np.uint8)
    assert not tissue_mask(black, mpp=8.0).any()
    path = write_slide(tmp_path / "black.tif", (600, 600), np.zeros((600, 600, 3), np.uint8),
                       mpp=0.25, compression="zlib")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="nucseg.slide.run"):
        report = _run(path, tmp_path)
    assert report["tissue_mm2"] == 0 and report["nuclei"] == 0
    assert any("no tissue found" in r.getMessage() for r in caplog.records)


def test_a_slide_smaller_than_the_least_tissue_piece_keeps_it(tmp_path):
    image, truth = disks_slide(100, [(30, 30), (70, 60)], radius=8)
    path = write_slide(tmp_path / "tiny.tif", (100, 100), image, mpp=0.25, levels=1)
    report = _run(path, tmp_path)  # 625 um2 of tissue, under the 5,000 um2 of a speck
    assert report["nuclei"] == 2 and report["tissue_mm2"] > 0


def test_scale_check_flags_a_wrong_magnification_with_a_suggested_mpp(tmp_path):
    from nucseg.quality import MIN_NUCLEI_FOR_SCALE, scale_check
    from nucseg.slide.summary import summary_row

    assert scale_check(np.full(MIN_NUCLEI_FOR_SCALE - 1, 1.0), mpp=0.25) is None
    # the suggestion brings the median to the typical area: areas scale with mpp squared
    low = scale_check(np.full(300, 25.0 / 16), mpp=0.25)
    assert low["suggested_mpp"] == 1.0 and "wrong magnification" in low["warning"]
    path, truth = grid_slide(tmp_path / "grid.tif")  # disks of 201 px: 12.6 um2 at 0.25 um/px
    right = _run(path, tmp_path / "right", chunk=256, halo=32)
    assert right["nuclei"] == truth.max() >= 200
    assert right["quality"]["slide_flags"] == [] and right["quality"]["scale"]["warning"] is None
    assert summary_row(path, right)["flags"] == ""
    wrong = _run(path, tmp_path / "wrong", chunk=256, halo=32, mpp=0.125)  # 40x called 80x
    scale = wrong["quality"]["scale"]
    assert scale["median_area_um2"] == pytest.approx(12.6 / 4, rel=0.15)
    assert wrong["quality"]["slide_flags"] == [scale["warning"]]
    assert 0.25 < scale["suggested_mpp"] < 0.4  # back towards the truth, 0.25
    assert "wrong magnification" in summary_row(path, wrong)["flags"]


def test_resume_finishes_outputs_interrupted_while_written(seam_slide, tmp_path):
    """Ctrl-C between the outputs leaves some of them and the chunks, without report.json: a
    plain rerun points to --resume, which writes them all again from the chunks."""
    from nucseg.slide.run import OutputsExist

    path, _, chunk = seam_slide
    reference = _run(path, tmp_path / "ref", chunk=chunk, halo=32)
    _run(path, tmp_path / "cut", chunk=chunk, halo=32, keep_chunks=True)
    folder = tmp_path / "cut" / "seams"
    for name in ("report.json", "thumbnail_overlay.png", "labels.ome.tif"):
        (folder / name).unlink()  # as an interruption after nuclei.parquet and the GeoJSON
    with pytest.raises(OutputsExist, match="--resume"):
        _run(path, tmp_path / "cut", chunk=chunk, halo=32)
    report = _run(path, tmp_path / "cut", chunk=chunk, halo=32, resume=True)
    assert report["chunks_resumed"] == report["chunks"] == reference["chunks"]
    ref = tmp_path / "ref" / "seams"
    for name in ("nuclei.parquet", "nuclei.geojson", "report.json", "labels.ome.tif"):
        assert (folder / name).is_file(), name
    assert (ref / "nuclei.geojson").read_bytes() == (folder / "nuclei.geojson").read_bytes()
    assert not (folder / "chunks").exists()


def test_a_failed_start_blocks_nothing(seam_slide, tmp_path):
    """A chunks/ folder without a finished chunk (what an older version left after a failed
    start) is not an unfinished run: a plain rerun goes ahead."""
    path, truth, chunk = seam_slide
    chunks = tmp_path / "seams" / "chunks"
    chunks.mkdir(parents=True)
    (chunks / "plan.json").write_text("{}")
    (chunks / "stain.json").write_text("{}")
    assert _run(path, tmp_path, chunk=chunk, halo=32)["nuclei"] == truth.max()


def test_the_output_folder_lock(tmp_path, caplog):
    import os
    import socket

    from nucseg.atomic import LOCK_NAME, folder_lock

    with folder_lock(tmp_path) as lock:
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(FileExistsError, match=f"process {os.getpid()}.*{LOCK_NAME}"):
            with folder_lock(tmp_path):
                pass
    assert not (tmp_path / LOCK_NAME).exists()
    with pytest.raises(RuntimeError), folder_lock(tmp_path):
        raise RuntimeError  # released on an error as well
    assert not (tmp_path / LOCK_NAME).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = {"pid": dead.pid, "host": socket.gethostname(), "started": "earlier"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(stale))
    with caplog.at_level(logging.WARNING, logger="nucseg.atomic"), folder_lock(tmp_path) as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of process {dead.pid}" in caplog.text
    other = {"pid": 1, "host": "another-host", "started": "earlier"}  # cannot be checked: held
    (tmp_path / LOCK_NAME).write_text(json.dumps(other))
    with pytest.raises(FileExistsError, match="another-host"), folder_lock(tmp_path):
        pass
    assert json.loads((tmp_path / LOCK_NAME).read_text()) == other
    assert [p.name for p in tmp_path.iterdir()] == [LOCK_NAME]  # no temporary left


def test_write_errors_name_the_file_and_the_cause(tmp_path):
    import errno

    from nucseg.atomic import atomic_write, write_error

    target = tmp_path / "x.bin"
    full = write_error(OSError(errno.ENOSPC, "No space left on device"), target)
    assert str(full) == f"[Errno {errno.ENOSPC}] cannot write {target}: no space left on the " \
        "device (disk full)" and full.errno == errno.ENOSPC  # fmt: skip
    short = write_error(OSError("4424712 requested and 767968 written"), target)
    assert f"cannot write {target}" in str(short) and "disk full" in str(short)
    other = FileNotFoundError(errno.ENOENT, "No such file")
    assert write_error(other, target) is other  # not a write's failure: unchanged
    with pytest.raises(OSError, match=f"cannot write {target}: read-only"):
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError(errno.EROFS, "Read-only file system")
    assert list(tmp_path.iterdir()) == []  # the temporary is gone


@pytest.mark.parametrize(
    ("key", "value", "ok"),
    [("tile", 256, True), ("tile", 2048, True), ("tile", 100, False), ("tile", 4096, False),
     ("tile", True, False), ("batch_size", 1, True), ("batch_size", 0, False),
     ("overlap", 0.5, True), ("overlap", 1.0, False), ("tta", "d4", True), ("tta", "x", False)],
)  # fmt: skip
def test_the_prediction_options_segment_and_slide_share(key, value, ok):
    from nucseg._checks import check_predict_option

    if ok:
        assert check_predict_option(key, value) == value
    else:
        with pytest.raises(ValueError, match=f"--param {key}="):
            check_predict_option(key, value)


@pytest.mark.parametrize("value", [0.05, 0.25, 5.0, 1e-4, 1000.0, float("inf"), float("nan"), 0])
def test_microns_per_pixel_are_checked_against_physics(value):
    from nucseg._checks import check_mpp

    if 0.05 <= value <= 5:
        assert check_mpp(value, what="x") == value
        return
    with pytest.raises(ValueError, match="^x: "):
        check_mpp(value, what="x")
    if np.isfinite(value) and value > 0:
        assert check_mpp(value, what="x", force=True) == value  # forced: used as given
    else:
        with pytest.raises(ValueError, match="finite number > 0"):
            check_mpp(value, what="x", force=True)


def test_slides_default_to_an_overlap_of_8_pixels_unless_asked():
    # docs/slides.md's rule: 8 pixels of the tile (never more than the model's own overlap);
    # segment and evaluate keep the model's 25 %
    from nucseg.pipeline import resolve_model
    from nucseg.slide.engine import SLIDE_OVERLAP_PX, engine_predictor, load_predictor

    folder = str(resolve_model("default"))
    assert engine_predictor(folder).options["overlap"] == 0.25
    assert SLIDE_OVERLAP_PX == 8
    assert load_predictor(folder, "{}").options["overlap"] == 8 / 256
    assert load_predictor(folder, '{"tile": 512}').options["overlap"] == 8 / 512
    assert load_predictor(folder, '{"overlap": 0.25}').options["overlap"] == 0.25
    assert load_predictor(folder, '{"overlap": 0.0}').options["overlap"] == 0.0


def test_slide_help_says_what_the_overlap_is():
    done = subprocess.run([sys.executable, "-m", "nucseg", "slide", "--help"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    text = " ".join(done.stdout.split())
    assert "fraction of the tile" in text and "16 pixels" not in text
    assert "--force-mpp" in text and "multiple of 32" in text


def test_ctrl_c_in_a_slide_run_points_to_resume(monkeypatch, capsys):
    from nucseg import cli
    from nucseg.slide import cli as slide_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(slide_cli, "cmd_slide", interrupted)
    assert cli.main(["slide", "a.svs", "--out", "out"]) == 130
    assert capsys.readouterr().err.strip().endswith("--resume")


def test_a_read_error_of_openslide_names_the_slide(tmp_path, monkeypatch):
    """A truncated slide OpenSlide opens fails in its tile reads with OpenSlideError (issue 29,
    row 1): the reader turns it into one ValueError naming the file."""
    import openslide

    image = np.full((600, 700, 3), 200, dtype=np.uint8)
    path = write_slide(tmp_path / "a.tif", image.shape[:2], image, mpp=0.25, compression="zlib")
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideReader)

        def fail(*args):
            raise openslide.OpenSlideError("TIFFFillTile: Read error at row 4294967295")

        monkeypatch.setattr(slide._slide, "read_region", fail)
        with pytest.raises(ValueError, match=r"a\.tif: cannot read its pixels .*damaged"):
            slide.read_region(0, 0, 10, 10)


def test_ctrl_c_in_a_batch_keeps_the_rows_of_finished_slides(tmp_path, monkeypatch):
    from nucseg import cli
    from nucseg.slide import cli as slide_cli

    def one(path, args, predict):
        if path.name == "b.tif":
            raise KeyboardInterrupt
        return {"slide": str(path), "status": "ok", "error": "", "nuclei": 7}

    monkeypatch.setattr(slide_cli, "_one_slide", one)
    argv = ["slide", "a.tif", "b.tif", "--out", str(tmp_path), "--method", "otsu"]
    assert cli.main(argv) == 130
    summary = pd.read_csv(tmp_path / "slides.csv")
    assert summary["slide"].tolist() == ["a.tif"] and summary["nuclei"].tolist() == [7]
    assert not (tmp_path / ".nucseg-lock").exists()
