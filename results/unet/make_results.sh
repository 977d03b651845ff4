#!/usr/bin/env bash
# Regenerate results/unet/ for the bundled default model (from the repository root, after
# `make install`). The model itself was trained and bundled by benchmarks/train_default.sh: the
# average of two runs of the default recipe (results/unet/soup/README.md), with the prediction
# settings and post-processing of the run that held out 4 images (chosen on them by
# python benchmarks/predict_settings.py and nucseg tune).
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
.venv/bin/python benchmarks/bench_segment.py --out "$out/speed.json"
