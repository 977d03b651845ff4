#!/usr/bin/env bash
# Regenerate results/unet/ for the bundled default model (from the repository root, after
# `make install`). The model itself (issue 17, docs/training.md "Stain robustness") is the average
# of two stain-augmented fine-tunes of the 32-image default-recipe run (configs/stain-norm-long.json
# and configs/stain-normafter-long.json; bash benchmarks/train_stain_soup.sh trains, averages and
# tunes), chosen by the rule on the validation images
# and the stain stress benchmark, and bundled by benchmarks/bundle_model.py. The previous bundle,
# the soup of two default-recipe runs, is results/unet/soup/README.md.
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
# speed against the previous bundle (the soup of two default-recipe runs, last bundled at 2597206),
# both timed in this run: issue 17 asks the new default to be no slower than 1.1 times it
.venv/bin/python benchmarks/bench_segment.py --out "$out/speed.json" --baseline-commit 2597206
