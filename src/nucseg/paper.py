"""The published numbers of Lagree et al. 2021 (Sci Rep 11:8025), Tables 2 and 3.

Transcribed from the paper's text in ``shared/paper/``; they are the paper's results, printed beside
ours, never used as ours. Column order follows Table 2: AJI, mAP (the paper's: mean precision over
IoU 0.50:0.05:0.95, see :func:`nucseg.metrics.paper_map`), F1, recall and precision at IoU 0.7, then
at 0.5. The paper's Table 2b (TNBC) has no classical rows.
"""

from __future__ import annotations

TABLE2_COLUMNS = (
    "aji", "paper_map", "f1_70", "recall_70", "precision_70", "f1_50", "recall_50", "precision_50",
)  # fmt: skip

#: Our result-file key for each row of the paper, in the paper's order.
METHOD_KEYS = {
    "Otsu": "otsu",
    "Watershed": "watershed",
    "Fiji": "fiji",
    "U-Net(VGG-16)": "unet-vgg16",
    "U-Net(VGG-19)": "unet-vgg19",
    "U-Net(ResNet-50)": "unet-resnet50",
    "U-Net(ResNet-101)": "unet-resnet101",
    "U-Net(ResNet-152)": "unet-resnet152",
    "U-Net(DenseNet-121)": "unet-densenet121",
    "U-Net(DenseNet-201)": "unet-densenet201",
    "U-Net(Inception-v3)": "unet-inception_v3",
    "Mask R-CNN": "maskrcnn",
    "U-Net Ensemble": "unet-ensemble",
    "GB U-Net": "gb-unet",
}

_DCNN_2A = {
    "U-Net(VGG-16)": (0.4925, 0.2736, 0.2886, 0.2927, 0.2845, 0.6511, 0.6604, 0.6420),
    "U-Net(VGG-19)": (0.4841, 0.3007, 0.3452, 0.3480, 0.3426, 0.6735, 0.6788, 0.6683),
    "U-Net(ResNet-50)": (0.4882, 0.3163, 0.3772, 0.3884, 0.3667, 0.6967, 0.7173, 0.6772),
    "U-Net(ResNet-101)": (0.4687, 0.3318, 0.3242, 0.2834, 0.3788, 0.6133, 0.5360, 0.7166),
    "U-Net(ResNet-152)": (0.4396, 0.3119, 0.3368, 0.3241, 0.3506, 0.6706, 0.6452, 0.6980),
    "U-Net(DenseNet-121)": (0.4668, 0.2988, 0.3579, 0.3738, 0.3432, 0.6796, 0.7099, 0.6517),
    "U-Net(DenseNet-201)": (0.5083, 0.3185, 0.3760, 0.3884, 0.3645, 0.6980, 0.7208, 0.6765),
    "U-Net(Inception-v3)": (0.4440, 0.2879, 0.3044, 0.3005, 0.3085, 0.6422, 0.6339, 0.6507),
    "Mask R-CNN": (0.5282, 0.3884, 0.4028, 0.3518, 0.4773, 0.6648, 0.5813, 0.7859),
    "U-Net Ensemble": (0.4926, 0.3381, 0.3791, 0.3677, 0.3913, 0.6957, 0.6746, 0.7180),
    "GB U-Net": (0.5331, 0.3909, 0.4007, 0.3509, 0.4669, 0.6862, 0.6010, 0.7997),
}

#: Table 2: dataset name -> paper row name -> values in :data:`TABLE2_COLUMNS` order.
TABLE2 = {
    "monuseg-breast": {
        "Otsu": (0.0456, 0.0677, 0.0310, 0.0255, 0.0396, 0.1619, 0.1331, 0.2065),
        "Watershed": (0.0828, 0.1581, 0.0863, 0.0591, 0.1594, 0.2743, 0.1880, 0.5070),
        "Fiji": (0.3396, 0.2370, 0.1828, 0.1447, 0.2481, 0.4411, 0.3493, 0.5986),
        **_DCNN_2A,
    },
    "tnbc": {
        "U-Net(VGG-16)": (0.3538, 0.1672, 0.1614, 0.1581, 0.1648, 0.5042, 0.4940, 0.5149),
        "U-Net(VGG-19)": (0.3829, 0.1742, 0.1364, 0.1226, 0.1536, 0.5099, 0.4585, 0.5741),
        "U-Net(ResNet-50)": (0.3972, 0.2324, 0.2701, 0.2530, 0.2897, 0.5638, 0.5281, 0.6048),
        "U-Net(ResNet-101)": (0.5080, 0.3306, 0.2904, 0.2214, 0.4217, 0.5427, 0.4139, 0.7882),
        "U-Net(ResNet-152)": (0.4063, 0.2594, 0.2790, 0.2478, 0.3194, 0.5874, 0.5216, 0.6723),
        "U-Net(DenseNet-121)": (0.4246, 0.2929, 0.3600, 0.3327, 0.3922, 0.6216, 0.5745, 0.6772),
        "U-Net(DenseNet-201)": (0.4453, 0.2843, 0.3604, 0.3287, 0.3988, 0.6298, 0.5745, 0.6970),
        "U-Net(Inception-v3)": (0.3817, 0.1962, 0.1562, 0.1303, 0.1947, 0.4703, 0.3925, 0.5864),
        "Mask R-CNN": (0.4899, 0.3449, 0.4392, 0.4027, 0.4830, 0.6732, 0.6172, 0.7403),
        "U-Net Ensemble": (0.4836, 0.2808, 0.2849, 0.2430, 0.3442, 0.6068, 0.5176, 0.7331),
        "GB U-Net": (0.5403, 0.3772, 0.4205, 0.3540, 0.5176, 0.6581, 0.5541, 0.8102),
    },
}

TABLE3_COLUMNS = ("Fiji", "U-Net(DenseNet-201)", "U-Net Ensemble", "Mask R-CNN", "GB U-Net")

#: Table 3: per-image AJI on the eight MoNuSeg breast images, columns as :data:`TABLE3_COLUMNS`.
TABLE3 = {
    "TCGA-A7-A13E-01Z-00-DX1": (0.35, 0.515, 0.579, 0.517, 0.628),
    "TCGA-A7-A13F-01Z-00-DX1": (0.328, 0.434, 0.491, 0.554, 0.518),
    "TCGA-AC-A2FO-01A-01-TS1": (0.252, 0.493, 0.478, 0.543, 0.511),
    "TCGA-AO-A0J2-01A-01-BSA": (0.323, 0.561, 0.486, 0.56, 0.535),
    "TCGA-AR-A1AK-01Z-00-DX1": (0.31, 0.526, 0.458, 0.511, 0.5),
    "TCGA-AR-A1AS-01Z-00-DX1": (0.634, 0.623, 0.632, 0.611, 0.676),
    "TCGA-E2-A14V-01Z-00-DX1": (0.272, 0.482, 0.436, 0.5, 0.464),
    "TCGA-E2-A1B5-01Z-00-DX1": (0.249, 0.433, 0.379, 0.43, 0.432),
}


def table2_row(dataset: str, method_key: str) -> dict[str, float] | None:
    """Return the paper's Table 2 row for our ``method_key`` on ``dataset``, or None if absent."""
    names = {key: name for name, key in METHOD_KEYS.items()}
    values = TABLE2.get(dataset, {}).get(names.get(method_key, ""))
    return None if values is None else dict(zip(TABLE2_COLUMNS, values, strict=True))
