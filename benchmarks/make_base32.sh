#!/usr/bin/env bash
# runs/base32: the 32-image default-recipe run (the bundled model of commit 6786155, before the
# soup), from git: the weights the stain-robustness candidates are fine-tuned from.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/base32
for f in config.json model.safetensors normaliser.json thresholds.json; do
    git show 6786155:src/nucseg/data/models/default/$f > runs/base32/$f
done
