"""The compact data pack reads back like the original data: exact labels, lossless test images."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import data_root_or_skip

from nucseg import datasets
from nucseg.datasets.manifest import verify
from nucseg.datasets.pack import pack


def test_pack_reads_back_like_the_original(tmp_path):
    root = data_root_or_skip()
    test_id = datasets.ids("monuseg", split="test", root=root)[0]
    xml_train = "TCGA-21-5784-01Z-00-DX1"  # an XML-annotated training image
    png_train = "TCGA-18-5592-01Z-00-DX1"  # a label-PNG training image
    chosen = {"monuseg": [test_id, xml_train, png_train], "tnbc": ["01_1"]}
    sizes = pack(tmp_path, root=root, include_tnbc=True, ids=chosen, progress=False)
    assert set(sizes) == {"monuseg", "tnbc"}
    for name in ("monuseg", "tnbc"):
        assert all(row.status == "ok" for row in verify(name, tmp_path))
    for name, image_ids in chosen.items():
        for image_id in image_ids:
            original = datasets.load_sample(name, image_id, root=root)
            packed = datasets.load_sample(name, image_id, root=tmp_path)
            np.testing.assert_array_equal(packed.labels, original.labels)
            difference = np.abs(packed.image.astype(int) - original.image)
            if image_id in (xml_train, png_train):  # lossy WebP, quality 95
                assert 0 < difference.mean() < 4  # chroma subsampling included
            else:
                assert difference.max() == 0
    assert (tmp_path / "monuseg" / "images" / f"{xml_train}.webp").is_file()
    with pytest.raises(FileExistsError, match="--overwrite"):
        pack(tmp_path, root=root, ids=chosen, progress=False)
