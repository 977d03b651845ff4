#!/usr/bin/env bash
# Fifth-round stain-robustness candidates (issue 17; docs/training.md, "Stain robustness"): the
# two round-4 recipes trained on, from the round-4 soup, then averaged again. About 50 minutes on
# this project's 2-core CPU (two 1,000-step runs side by side), after train_stain_soup.sh.
#
#   bash benchmarks/train_stain_xl.sh              # trains, averages, tunes; then, by hand:
#   python benchmarks/bench_stain.py --model runs/stain-soup-xl --name stain-soup-xl --overwrite
#   python benchmarks/select_stain.py
#
# 1. runs/stain-soup (benchmarks/train_stain_soup.sh) if it is not there.
# 2. configs/stain-norm-xl.json and configs/stain-normafter-xl.json: 1,000 more steps of each
#    round-4 recipe from the soup (lr 1e-4; seed 0, as every run: the seed also draws the 4
#    validation images; an EMA of the weights kept beside them; the normalised-then-augmented
#    run re-stains 60 % of its tiles instead of 80 %).
# 3. Their uniform weight average, post-processing re-tuned on the 4 validation images.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f runs/stain-soup/model.safetensors ] || bash benchmarks/train_stain_soup.sh
bash benchmarks/_train_soup_of_two.sh stain-soup-xl stain-normafter-xl stain-norm-xl "$@"
