"""The labelled datasets CoNSeP, CPM-15 and DSB-2018 (stained): manifests, counts, WebP, types."""

from __future__ import annotations

import numpy as np
import pytest

from nucseg import datasets
from nucseg.datasets.labelled import CONSEP_TYPES, read_types
from nucseg.datasets.manifest import read_manifest, verify

pytestmark = pytest.mark.data


@pytest.mark.parametrize(
    ("name", "split", "count"),
    [
        ("consep", "train", 27),
        ("consep", "test", 14),
        ("consep", "all", 41),
        ("cpm15", "20x", 7),
        ("cpm15", "40x", 8),
        ("cpm15", "all", 15),
        ("dsb2018-he", "all", 107),
    ],
)
def test_split_counts(data_root, name, split, count):
    assert len(datasets.ids(name, split=split, root=data_root)) == count


def test_nucleus_totals_match_the_manifests_and_the_readme(data_root):
    # README of the data: CoNSeP 24,332 nuclei (train 15,555, test 8,777), CPM-15 2,905,
    # DSB-2018 stained 4,550
    expected = {("consep", "train"): 15555, ("consep", "test"): 8777,
                ("cpm15", "all"): 2905, ("dsb2018-he", "all"): 4550}  # fmt: skip
    for (name, split), total in expected.items():
        rows = {r["id"]: r for r in read_manifest(name, data_root)}
        ids = datasets.ids(name, split=split, root=data_root)
        assert sum(int(rows[i]["n_nuclei"]) for i in ids) == total


def test_consep_sample_webp_labels_and_types(data_root):
    sample = datasets.load_sample("consep", "consep_test_01", root=data_root)
    assert sample.image.shape == (1000, 1000, 3) and sample.image.dtype == np.uint8
    assert sample.labels.dtype == np.int32 and sample.mpp == 0.25
    ids = set(np.unique(sample.labels)) - {0}
    assert ids == set(sample.types)  # a type for every nucleus, none for a missing one
    assert set(sample.types.values()) <= set(CONSEP_TYPES)
    assert sample.organ == "colorectal" and sample.dataset == "consep"


def test_consep_type_counts_over_all_tiles(data_root):
    # README: over the 41 tiles, classes 1-4 count 932 / 5,579 / 8,751 / 9,070
    counts = np.zeros(5, int)
    for image_id in datasets.ids("consep", split="all", root=data_root):
        kinds = read_types(data_root / "consep" / "types" / f"{image_id}.tsv")
        counts += np.bincount(list(kinds.values()), minlength=5)
    assert counts[1:].tolist() == [932, 5579, 8751, 9070]


def test_cpm15_resolutions_and_dsb_unknown(data_root):
    for image_id in datasets.ids("cpm15", split="20x", root=data_root):
        assert datasets.load_sample("cpm15", image_id, root=data_root).mpp == 0.5
    sample = datasets.load_sample("cpm15", "cpm15_image08", root=data_root)
    assert sample.mpp == 0.25 and sample.types is None
    first = datasets.ids("dsb2018-he", split="all", root=data_root)[0]
    dsb = datasets.load_sample("dsb2018-he", first, root=data_root)
    assert dsb.mpp is None and dsb.image.shape == (256, 320, 3)


@pytest.mark.parametrize("name", ["consep", "cpm15"])
def test_verify_every_listed_file(data_root, name):
    rows = verify(name, root=data_root)
    assert rows and all(r.status == "ok" for r in rows)


def test_evaluation_names(data_root):
    for key in ("consep-test", "consep-train", "cpm15-20x", "cpm15-40x", "dsb2018-he"):
        name, split = datasets.resolve_eval_dataset(key)
        assert datasets.ids(name, split=split, root=data_root)
    with pytest.raises(KeyError, match="valid splits: 20x, 40x, all"):
        datasets.ids("cpm15", split="test", root=data_root)


def test_types_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "x.tsv"
    bad.write_text("id\tkind\n1\t2\n")
    with pytest.raises(ValueError, match="x.tsv"):
        read_types(bad)
    bad.write_text("label\ttype\n1\t9\n")
    with pytest.raises(ValueError, match="line 2"):
        read_types(bad)
