"""Tests of nucseg.datasets: toy cases worked out by hand, then the real MoNuSeg and TNBC data.

The real-data tests need the datasets under ``data_root()`` (``NUCSEG_DATA`` or
``../shared/datasets``); they are skipped when it is absent, unless ``NUCSEG_REQUIRE_DATA=1``.

``tests/data/monuseg_label_counts.tsv`` pins the per-image label counts of MoNuSeg. It was
generated once with the datasets in place, from the repository root::

    .venv/bin/python tests/test_datasets.py --write-label-counts

Regenerate it only on purpose (a change of the rasterisation rule), and review the diff.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from helpers import data_root_or_skip
from PIL import Image

from nucseg import datasets
from nucseg.datasets import _common
from nucseg.datasets.folder import load_folder
from nucseg.datasets.manifest import read_manifest, verify
from nucseg.datasets.monuseg import read_monuseg, shoelace_area, xml_to_labels

COUNTS_TABLE = Path(__file__).parent / "data" / "monuseg_label_counts.tsv"
COUNT_COLUMNS = ("id", "n_labels", "n_empty", "n_hidden")
PAPER_TEST_IDS = {
    "TCGA-A7-A13E-01Z-00-DX1", "TCGA-A7-A13F-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1",
    "TCGA-AR-A1AS-01Z-00-DX1", "TCGA-E2-A1B5-01Z-00-DX1", "TCGA-E2-A14V-01Z-00-DX1",
    "TCGA-AC-A2FO-01A-01-TS1", "TCGA-AO-A0J2-01A-01-BSA",
}  # fmt: skip


@pytest.fixture(scope="module")
def root() -> Path:
    return data_root_or_skip()


def assert_consecutive(labels: np.ndarray) -> None:
    assert labels.dtype == np.int32 and labels.ndim == 2
    values = np.unique(labels)
    np.testing.assert_array_equal(values[values > 0], np.arange(1, labels.max() + 1))


# --- Sample, data_root, registry --------------------------------------------------------------


def test_sample_unpacks_as_id_image_labels():
    image, labels = np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2), np.int32)
    sample = datasets.Sample("a", image, labels, organ="breast", dataset="tnbc")
    image_id, im, lab = sample
    assert image_id == "a" and im is image and lab is labels
    with pytest.raises(AttributeError):
        sample.id = "b"  # frozen


def test_data_root_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCSEG_DATA", str(tmp_path))
    assert datasets.data_root() == tmp_path
    monkeypatch.setenv("NUCSEG_DATA", str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="NUCSEG_DATA"):
        datasets.data_root()


def test_data_root_default_beside_the_repository(tmp_path, monkeypatch):
    monkeypatch.delenv("NUCSEG_DATA", raising=False)
    monkeypatch.setattr(_common, "_REPO_ROOT", tmp_path / "elsewhere" / "repo")
    (tmp_path / "clone").mkdir()
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "clone")
    assert datasets.data_root() == (tmp_path / "shared" / "datasets").resolve()
    (tmp_path / "lonely" / "repo").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "lonely" / "repo")
    with pytest.raises(FileNotFoundError, match="NUCSEG_DATA") as err:
        datasets.data_root()
    assert str(tmp_path / "lonely" / "shared" / "datasets") in str(err.value)


def test_unknown_names_and_splits_list_the_valid_ones():
    with pytest.raises(KeyError, match="monuseg, tnbc"):
        datasets.load("kumar")
    with pytest.raises(KeyError, match="load_folder"):
        datasets.ids("folder")
    with pytest.raises(KeyError, match="challenge-train"):
        datasets.load("monuseg", split="val")
    with pytest.raises(KeyError, match="test, all"):
        datasets.ids("tnbc", split="train")
    with pytest.raises(KeyError, match="monuseg-breast"):
        datasets.resolve_eval_dataset("breast")
    assert datasets.resolve_eval_dataset("tnbc") == ("tnbc", "all")
    for name, split in datasets.EVAL_DATASETS.values():
        assert split in datasets.DATASETS[name].splits


# --- XML polygons -> labels -------------------------------------------------------------------


def write_xml(path: Path, regions: list[list[tuple[float, float]]]) -> Path:
    """Write an Aperio-style XML with one Region per list of (X, Y) vertices."""
    parts = ['<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>']
    for k, vertices in enumerate(regions, start=1):
        parts.append(f'<Region Id="{k}"><Attributes/><Vertices>')
        parts += [f'<Vertex X="{x}" Y="{y}"/>' for x, y in vertices]
        parts.append("</Vertices></Region>")
    parts.append("</Regions></Annotation></Annotations>")
    path.write_text("\n".join(parts))
    return path


def square(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def test_xml_to_labels_toy_case(tmp_path):
    # Image of 10 rows x 12 columns; vertex (X, Y) = (column, row); edges on half-integers so
    # that no pixel centre lies on a polygon edge.
    regions = [
        square(3.5, 3.5, 7.5, 7.5),  # 0: small square, rows/cols 4..7, area 16 -> label 1
        square(0.5, 0.5, 5.5, 5.5),  # 1: big square, rows/cols 1..5, area 25 -> label 2
        [(2.0, 2.0), (3.0, 3.0)],  # 2: two vertices -> dropped (n_few_vertices)
        square(20, 20, 22, 22),  # 3: outside the image -> n_empty
        square(9.1, 1.1, 9.3, 1.3),  # 4: covers no pixel centre -> n_empty
        square(9.5, 7.5, 14, 12),  # 5: clipped at the border: rows 8..9, cols 10..11 -> 3
        square(0.5, 7.5, 3.5, 8.5),  # 6: wide bar: row 8, cols 1..3 -> label 4
        square(8.5, 3.5, 10.5, 5.5),  # 7: rows 4..5, cols 9..10, area 4: hidden by 8
        square(8.6, 3.6, 10.4, 5.4),  # 8: same pixel centres, area 3.24 -> label 5
    ]
    labels, report = xml_to_labels(write_xml(tmp_path / "toy.xml", regions), (10, 12, 3))
    expected = np.zeros((10, 12), np.int32)
    expected[1:6, 1:6] = 2
    expected[4:8, 4:8] = 1  # the smaller nucleus keeps the overlap, though it comes first
    expected[8:10, 10:12] = 3
    expected[8, 1:4] = 4  # a row of 3 pixels: X is the column, Y the row
    expected[4:6, 9:11] = 5
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int32
    assert report == datasets.AnnotationReport(
        source="xml", n_regions=9, n_few_vertices=1, n_empty=2, n_hidden=1, n_labels=5
    )


def test_xml_equal_areas_later_region_keeps_the_overlap(tmp_path):
    path = write_xml(tmp_path / "tie.xml", [square(0.5, 0.5, 3.5, 3.5), square(1.5, 1.5, 4.5, 4.5)])
    labels, report = xml_to_labels(path, (6, 6))
    assert labels[2, 2] == labels[3, 3] == 2 and labels[1, 1] == 1
    assert report.n_labels == 2 and report.n_hidden == 0


def test_shoelace_area_ignores_orientation():
    rows, cols = np.array([0.0, 0.0, 2.0, 2.0]), np.array([0.0, 3.0, 3.0, 0.0])
    assert shoelace_area(rows, cols) == shoelace_area(rows[::-1], cols[::-1]) == 6.0


def test_xml_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.xml"):
        xml_to_labels(tmp_path / "absent.xml", (4, 4))
    broken = tmp_path / "broken.xml"
    broken.write_text("<Annotations><Region>")
    with pytest.raises(ValueError, match="broken.xml.*not well-formed"):
        xml_to_labels(broken, (4, 4))
    other = tmp_path / "other.xml"
    other.write_text("<svg/>")
    with pytest.raises(ValueError, match="other.xml.*Annotations"):
        xml_to_labels(other, (4, 4))
    bad_vertex = tmp_path / "vertex.xml"
    bad_vertex.write_text('<Annotations><Region Id="7"><Vertex X="1"/></Region></Annotations>')
    with pytest.raises(ValueError, match="vertex.xml.*Id='7'"):
        xml_to_labels(bad_vertex, (4, 4))


# --- folder dataset ---------------------------------------------------------------------------


def test_folder_round_trip_and_binary_masks(tmp_path, caplog):
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    image_a = rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)
    image_b = rng.integers(0, 256, (8, 9, 4), dtype=np.uint8)
    Image.fromarray(image_a).save(images / "a.png")
    tifffile.imwrite(images / "b.tif", image_b)
    lab_a = np.zeros((8, 9), np.uint16)
    lab_a[1:3, 1:3], lab_a[5:7, 5:8] = 7, 300  # not consecutive: renumbered in value order
    Image.fromarray(lab_a).save(labels / "a.png")
    mask_b = np.zeros((8, 9), np.uint8)
    mask_b[0:2, 0:2], mask_b[2, 2], mask_b[6:8, 6:9] = 255, 255, 255  # diagonal touch joins
    Image.fromarray(mask_b).save(labels / "b.png")
    with caplog.at_level(logging.WARNING):
        samples = list(load_folder(images, labels))
    assert [s.id for s in samples] == ["a", "b"]
    a, b = samples
    np.testing.assert_array_equal(a.image, image_a)
    np.testing.assert_array_equal(a.labels, np.select([lab_a == 7, lab_a == 300], [1, 2], 0))
    np.testing.assert_array_equal(b.image, image_b[..., :3])
    expected_b = np.zeros((8, 9), np.int32)
    expected_b[0:2, 0:2], expected_b[2, 2], expected_b[6:8, 6:9] = 1, 1, 2
    np.testing.assert_array_equal(b.labels, expected_b)
    assert "binary mask" in caplog.text and "b.png" in caplog.text
    for sample in samples:
        assert sample.image.dtype == np.uint8 and sample.dataset == "folder"
        assert_consecutive(sample.labels)


def test_folder_mismatches_raise(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "a.png")
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(images / "only_image.jpg")
    Image.fromarray(np.ones((5, 4), np.uint8)).save(labels / "a.png")
    Image.fromarray(np.ones((4, 4), np.uint8)).save(labels / "only_label.png")
    with pytest.raises(ValueError, match="only_image") as err:
        load_folder(images, labels)  # checked at call time, before iterating
    assert "only_label" in str(err.value)
    (images / "only_image.jpg").unlink()
    (labels / "only_label.png").unlink()
    with pytest.raises(ValueError, match=r"a\.png has shape \(4, 4\).*a\.png has shape \(5, 4\)"):
        list(load_folder(images, labels))
    Image.fromarray(np.zeros((5, 4), np.uint8)).save(images / "a.png")  # greyscale
    with pytest.raises(ValueError, match=r"a\.png: .*greyscale"):
        list(load_folder(images, labels))
    with pytest.raises(FileNotFoundError, match="absent"):
        load_folder(tmp_path / "absent", labels)


# --- manifest verification on a fake root -----------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_verify_on_a_fake_root(tmp_path):
    files = {
        "images/A.tif": b"image A",
        "annotations/A.xml": b"<Annotations/>",
        "images/B.tif": b"image B",
        "labels/B.png": b"labels B",
    }
    folder = tmp_path / "monuseg"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    header = "id\tsplit\torgan\tn_nuclei\tannotation\tsha256_image\tsha256_annotation\tsource"
    rows = [
        f"A\ttrain\tliver\t1\txml\t{sha(files['images/A.tif'])}\t{sha(files['annotations/A.xml'])}\tx",
        f"B\ttest\tbreast\t1\tlabels\t{sha(files['images/B.tif'])}\t{sha(files['labels/B.png'])}\tx",
    ]
    (folder / "MANIFEST.tsv").write_text("\n".join([header, *rows]) + "\n")
    assert [r.status for r in verify("monuseg", root=tmp_path)] == ["ok"] * 4
    assert [r["id"] for r in read_manifest("monuseg", root=tmp_path)] == ["A", "B"]

    (folder / "labels/B.png").write_bytes(b"labels C")  # one byte changed
    (folder / "images/A.tif").unlink()
    (folder / "labels/extra.png").write_bytes(b"?")
    (folder / ".DS_Store").write_bytes(b"")  # hidden files are not reported
    result = [(r.id, r.file, r.status) for r in verify("monuseg", root=tmp_path)]
    assert result == [
        ("A", "images/A.tif", "missing"),
        ("A", "annotations/A.xml", "ok"),
        ("B", "images/B.tif", "ok"),
        ("B", "labels/B.png", "checksum mismatch"),
        ("", "labels/extra.png", "unlisted"),
    ]
    with pytest.raises(KeyError, match="monuseg, tnbc"):
        verify("kumar", root=tmp_path)


# --- real data --------------------------------------------------------------------------------


@pytest.mark.data
def test_paper_and_challenge_splits(root):
    organs = {r["id"]: r["organ"] for r in read_manifest("monuseg", root)}
    train = datasets.ids("monuseg", split="nonbreast", root=root)
    test = datasets.ids("monuseg", split="breast", root=root)
    assert datasets.ids("monuseg", split="train", root=root) == train  # the old names
    assert datasets.ids("monuseg", split="test", root=root) == test
    assert len(train) == 36 and all(organs[i] != "breast" for i in train)
    assert set(test) == PAPER_TEST_IDS and len(test) == 8
    assert {i for i, organ in organs.items() if organ == "breast"} == PAPER_TEST_IDS
    challenge_train = datasets.ids("monuseg", split="challenge-train", root=root)
    challenge_test = datasets.ids("monuseg", split="challenge-test", root=root)
    assert (len(challenge_train), len(challenge_test)) == (30, 14)
    everything = datasets.ids("monuseg", split="all", root=root)
    assert everything == sorted(organs) and len(everything) == 44
    assert sorted(train + test) == everything == sorted(challenge_train + challenge_test)
    tnbc = datasets.ids("tnbc", root=root)
    assert tnbc == datasets.ids("tnbc", split="all", root=root) == sorted(tnbc)
    assert len(tnbc) == 50 and tnbc[0] == "01_1"


@pytest.mark.data
def test_load_is_lazy_and_samples_carry_metadata(root):
    samples = datasets.load("monuseg", split="test", root=root)
    assert not isinstance(samples, list | tuple)
    sample = next(iter(samples))
    assert sample.id == "TCGA-A7-A13E-01Z-00-DX1" and sample.organ == "breast"
    assert sample.dataset == "monuseg"
    tnbc = datasets.load_sample("tnbc", "01_1", root=root)
    assert (tnbc.organ, tnbc.dataset, tnbc.image.shape) == ("breast", "tnbc", (512, 512, 3))
    with pytest.raises(KeyError, match="01_1"):
        datasets.load_sample("tnbc", "99_9", root=root)


def monuseg_label_counts(root: Path) -> list[dict[str, str]]:
    """The rows of the pinned table, computed from the data."""
    rows = []
    for image_id in datasets.ids("monuseg", split="all", root=root):
        _, _, report = read_monuseg(image_id, root=root)
        counts = (image_id, report.n_labels, report.n_empty, report.n_hidden)
        rows.append({k: str(v) for k, v in zip(COUNT_COLUMNS, counts, strict=True)})
    return rows


@pytest.mark.data
@pytest.mark.slow
def test_all_monuseg_images(root):
    manifest = {r["id"]: r for r in read_manifest("monuseg", root)}
    with COUNTS_TABLE.open(newline="") as f:
        pinned = {r["id"]: r for r in csv.DictReader(f, delimiter="\t")}
    assert sorted(pinned) == sorted(manifest)
    for image_id, row in manifest.items():
        image, labels, report = read_monuseg(image_id, root=root)
        assert image.shape == (1000, 1000, 3) and image.dtype == np.uint8
        assert labels.shape == (1000, 1000)
        assert_consecutive(labels)
        assert report.n_labels == int(labels.max())
        assert report.source == row["annotation"]
        n_nuclei = int(row["n_nuclei"])
        if report.source == "xml":
            assert report.n_regions - report.n_few_vertices == n_nuclei, image_id
            assert report.n_labels + report.n_empty + report.n_hidden == n_nuclei, image_id
        else:
            assert report.n_labels == n_nuclei, image_id
        expected = pinned[image_id]
        assert (report.n_labels, report.n_empty, report.n_hidden) == (
            int(expected["n_labels"]),
            int(expected["n_empty"]),
            int(expected["n_hidden"]),
        ), image_id


@pytest.mark.data
def test_all_tnbc_images(root):
    manifest = {r["id"]: int(r["n_nuclei_8conn"]) for r in read_manifest("tnbc", root)}
    total = 0
    for image_id, image, labels in datasets.load("tnbc", split="all", root=root):
        assert image.shape == (512, 512, 3) and image.dtype == np.uint8
        assert labels.shape == (512, 512)
        assert_consecutive(labels)
        assert labels.max() == manifest[image_id], image_id
        total += int(labels.max())
    assert total == 4028


@pytest.mark.data
@pytest.mark.parametrize("name", ["monuseg", "tnbc"])
def test_verify_real_data(root, name):
    rows = verify(name, root=root)
    assert len(rows) == {"monuseg": 88, "tnbc": 100}[name]
    assert [r for r in rows if r.status != "ok"] == []


def _write_label_counts() -> None:
    rows = monuseg_label_counts(datasets.data_root())
    COUNTS_TABLE.parent.mkdir(parents=True, exist_ok=True)
    with COUNTS_TABLE.open("w", newline="") as f:
        writer = csv.DictWriter(f, COUNT_COLUMNS, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {COUNTS_TABLE}: {len(rows)} images")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-label-counts"]:
        sys.exit("usage: python tests/test_datasets.py --write-label-counts")
    _write_label_counts()


def test_one_name_one_meaning_across_api_and_cli():
    """A command-line dataset name is DATASET-SPLIT of the API; the clashing old names fail."""
    for name, (dataset, split) in datasets.EVAL_DATASETS.items():
        assert name in (dataset, f"{dataset}-{split}"), name
        assert datasets.resolve_eval_dataset(name) == (dataset, split)
    renamed = {"monuseg-test": "monuseg-challenge-test", "monuseg-train": "monuseg-nonbreast"}
    for old, new in renamed.items():
        with pytest.raises(KeyError, match=f"ambiguous.*{new}"):
            datasets.resolve_eval_dataset(old)
