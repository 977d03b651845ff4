#!/usr/bin/env bash
# Rebuild the bundled default model from scratch (issue 17; docs/training.md, "Stain robustness":
# the fourth-round candidate, chosen by the rule on the validation images and the stain stress
# benchmark). About an hour on this project's 2-core CPU (two 1,400-step fine-tunes side by side).
#
#   bash benchmarks/train_stain_soup.sh            # trains, averages, tunes; then, by hand:
#   python benchmarks/bench_stain.py --model runs/stain-soup --name stain-soup --overwrite
#   python benchmarks/select_stain.py
#   python benchmarks/bundle_model.py runs/stain-soup --name default --overwrite
#
# 1. base32: the 32-image default-recipe run (the bundled model of commit 6786155).
# 2. Two fine-tunes of it with strong stain augmentation and Macenko normalisation, 1,400 steps:
#    configs/stain-norm-long.json (normalised, then augmented) and
#    configs/stain-normafter-long.json (augmented as scanned, then normalised per tile).
# 3. Their uniform weight average (benchmarks/average_weights.py), post-processing re-tuned on the
#    4 validation images (nucseg tune).
set -euo pipefail
cd "$(dirname "$0")/.."
bash benchmarks/make_base32.sh
bash benchmarks/_train_soup_of_two.sh stain-soup stain-normafter-long stain-norm-long "$@"
