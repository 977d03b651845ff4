#!/usr/bin/env bash
# Regenerate results/unet/ for the bundled default model (from the repository root, after
# `make install`). The model itself (issue 26, docs/generalisation.md, third round) is the
# WiSE-FT interpolation, half and half, of the previous default (bundled as stain-soup: the average
# of two stain-augmented fine-tunes, issue 17) and the multi-source run ms-types-2
# (benchmarks/interpolate_weights.py), chosen by the rule on held-out validation images of four
# sources and bundled by benchmarks/bundle_model.py.
set -euo pipefail
cd "$(dirname "$0")/../.."
nucseg=".venv/bin/nucseg"
out=results/unet
for dataset in monuseg-breast tnbc; do
    "$nucseg" evaluate --model default --dataset "$dataset" --overwrite \
        --json "$out/default_${dataset}.json" --markdown "$out/default_${dataset}.md"
done
"$nucseg" compare results/classical/fiji_monuseg-breast.json results/classical/fiji_tnbc.json \
    "$out"/default_monuseg-breast.json "$out"/default_tnbc.json --out "$out/table2.md" --overwrite \
    --paper "U-Net(VGG-16)" "U-Net(VGG-19)" "U-Net(ResNet-50)" "U-Net(ResNet-101)" \
    "U-Net(ResNet-152)" "U-Net(DenseNet-121)" "U-Net(DenseNet-201)" "U-Net(Inception-v3)" \
    "Mask R-CNN" "U-Net Ensemble" "GB U-Net"
# speed against the previous bundle (stain-soup, last bundled as the default at be27f59), both
# timed in this run: issue 26 asks the new default to be no slower per pixel
.venv/bin/python benchmarks/bench_segment.py --out "$out/speed.json" --baseline-commit be27f59
