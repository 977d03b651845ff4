#!/usr/bin/env bash
# Train two configs side by side (one thread each), average their weights, tune the average:
#
#   bash benchmarks/_train_soup_of_two.sh OUT FIRST SECOND [nucseg train options]
#
# trains configs/FIRST.json and configs/SECOND.json into runs/FIRST and runs/SECOND (logs
# runs/NAME.log), writes their uniform weight average to runs/OUT with FIRST's normaliser and
# settings (benchmarks/average_weights.py), and re-tunes its post-processing on the validation
# images (nucseg tune). Used by train_stain_soup.sh and train_stain_xl.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1 first=$2 second=$3
shift 3
for name in "$first" "$second"; do
    OMP_NUM_THREADS=1 nohup .venv/bin/nucseg train "configs/$name.json" --out "runs/$name" "$@" \
        > "runs/$name.log" 2>&1 &
done
wait
.venv/bin/python benchmarks/average_weights.py "runs/$first" "runs/$second" \
    --settings-from "runs/$first" --out "runs/$out"
.venv/bin/nucseg tune "runs/$out"
