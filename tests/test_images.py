"""One behaviour per model: ``nucseg segment``, the Python API (``make_segmenter``,
``nucseg.slide.segment_slide``), ``evaluate`` and ``nucseg slide`` give an image the same labels,
with the model folder's tile overlap (which slides use when asked: their own default is 8
pixels, docs/slides.md), thresholds and normaliser; ``--mpp`` resamples to the model's scale and
back; an image larger than a chunk goes through the chunks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from nucseg.cli import main
from nucseg.io import read_image, write_png
from nucseg.pipeline import BUNDLED_MODELS, make_segmenter
from nucseg.slide import segment_slide

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (BUNDLED_MODELS / "default" / "model.safetensors").is_file(), reason="no bundled model"
    ),
]


@pytest.fixture(scope="module")
def image_file(tmp_path_factory, data_root):
    """A 600 x 700 crop of a real MoNuSeg breast image (not square, larger than the stain
    fit's 512-pixel window), as a PNG."""
    from nucseg import datasets

    sample = datasets.load_sample("monuseg", "TCGA-A7-A13E-01Z-00-DX1")
    path = tmp_path_factory.mktemp("image") / "crop.png"
    write_png(path, np.ascontiguousarray(sample.image[200:800, 100:800]))
    return path


def _segment(path, out, *options):
    assert main(["segment", str(path), "--out", str(out), *options]) == 0
    return tifffile.imread(out / f"{path.stem}_labels.tif")


def _slide(path, out, *options):
    assert main(["slide", str(path), "--out", str(out), "--no-progress", *options]) == 0
    report = json.loads((out / path.stem / "report.json").read_text())
    return tifffile.imread(out / path.stem / "labels.ome.tif"), report


@pytest.mark.parametrize("mpp", [None, 0.5])
def test_segment_the_api_and_slide_give_identical_labels(image_file, tmp_path, mpp):
    options = [] if mpp is None else ["--mpp", str(mpp)]
    by_segment = _segment(image_file, tmp_path / "segment", *options)
    by_api = make_segmenter(model="default", mpp=mpp)(read_image(image_file))
    # the model's overlap, asked of the slide (whose own is 8 pixels): the same engine
    by_slide, report = _slide(
        image_file, tmp_path / "slide", "--mpp", str(mpp or 0.25), "--overlap", "0.25"
    )
    segment_slide(image_file, tmp_path / "slide_api", mpp=mpp or 0.25, progress=False,
                  predict={"overlap": 0.25})  # fmt: skip
    by_slide_api = tifffile.imread(tmp_path / "slide_api" / image_file.stem / "labels.ome.tif")
    assert by_segment.shape == by_api.shape == by_slide.shape == read_image(image_file).shape[:2]
    assert by_segment.max() > 50
    np.testing.assert_array_equal(by_segment, by_api)
    np.testing.assert_array_equal(by_segment, by_slide)
    np.testing.assert_array_equal(by_segment, by_slide_api)
    # the model folder's settings, for every entry point
    thresholds = json.loads((BUNDLED_MODELS / "default" / "thresholds.json").read_text())
    assert report["predict"]["overlap"] == thresholds["predict"]["overlap"] == 0.25
    assert report["scale"] == pytest.approx(0.25 / (mpp or 0.25))


def test_mpp_resamples_to_the_model_scale_and_back(image_file):
    image = read_image(image_file)
    plain = make_segmenter(model="default")(image)
    coarse = make_segmenter(model="default", mpp=0.5)(image)  # seen as 20x: enlarged twice
    assert coarse.shape == plain.shape
    # at twice the magnification each nucleus is four times larger for the network: it finds
    # other, mostly more, nuclei, still covering the same tissue
    assert coarse.max() != plain.max()
    overlap = ((coarse > 0) & (plain > 0)).sum() / max((plain > 0).sum(), 1)
    assert overlap > 0.5


def test_an_image_larger_than_a_chunk_goes_through_the_chunks(image_file, tmp_path):
    """With 256-pixel chunks the 600 x 700 crop is 9 chunks: ``segment``'s path gives the
    labels of ``nucseg slide`` with the same chunks, every nucleus whole and numbered once."""
    from nucseg.slide.images import ImageSegmenter

    image = read_image(image_file)
    chunked = ImageSegmenter.from_model(BUNDLED_MODELS / "default", chunk=256)(image)
    by_slide, report = _slide(
        image_file, tmp_path / "slide", "--mpp", "0.25", "--chunk", "256", "--overlap", "0.25"
    )
    assert report["chunks"] == 9
    np.testing.assert_array_equal(chunked, by_slide)
    ids = np.unique(chunked)[1:]
    assert ids.tolist() == list(range(1, len(ids) + 1))
    whole = make_segmenter(model="default")(image)
    assert abs(len(ids) - whole.max()) <= 0.1 * whole.max()  # seams change a few nuclei only


def test_evaluate_resamples_a_sample_as_segment_mpp_does(image_file):
    """A dataset sample that states its resolution (CPM-15's 20x tiles) is segmented by
    ``evaluate`` through the same plan as ``segment --mpp``: the same labels."""
    from nucseg.datasets import Sample
    from nucseg.pipeline import evaluate

    image = read_image(image_file)
    truth = np.zeros(image.shape[:2], np.int32)
    truth[100:120, 100:120] = 1
    sample = Sample("crop", image, truth, "breast", "monuseg", mpp=0.5)
    kept = {}
    evaluate(make_segmenter(model="default"), [sample], progress=False,
             keep=lambda i, _, labels: kept.setdefault(i, labels))  # fmt: skip
    np.testing.assert_array_equal(kept["crop"], make_segmenter(model="default", mpp=0.5)(image))
