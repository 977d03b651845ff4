#!/usr/bin/env bash
# Evaluate the three classical baselines on the paper's two test sets and compare with Table 2.
# Writes results/classical/<method>_<dataset>.{json,md} and results/classical/table2.md.
#   bash benchmarks/run_classical.sh        (from the repository root, after `make install`)
set -euo pipefail
cd "$(dirname "$0")/.."
nucseg=".venv/bin/nucseg"
out=results/classical
mkdir -p "$out"
for dataset in monuseg-breast tnbc; do
    for method in otsu watershed fiji; do
        "$nucseg" evaluate --method "$method" --dataset "$dataset" --overwrite \
            --json "$out/${method}_${dataset}.json" --markdown "$out/${method}_${dataset}.md"
    done
done
"$nucseg" compare "$out"/{otsu,watershed,fiji}_monuseg-breast.json "$out"/{otsu,watershed,fiji}_tnbc.json \
    --out "$out/table2.md" --overwrite
