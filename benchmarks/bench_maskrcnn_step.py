"""Seconds per Mask R-CNN training step (4 real 256-pixel tiles) against the RoIs per image.

The box and mask heads cost most of a step on a CPU; this is how ``rois_per_image`` (the
proposals that train them per image) was chosen for ``nucseg.maskrcnn.build_maskrcnn``. Prints
the time of each of 3 steps per setting (the first includes warm-up):

    python benchmarks/bench_maskrcnn_step.py
"""

from __future__ import annotations

import time

import torch

from nucseg import datasets
from nucseg.maskrcnn import _image_tensor, build_maskrcnn, instance_targets

SETTINGS = [(256, 0.25), (128, 0.25), (64, 0.5)]  # (RoIs per image, positive fraction)


def main() -> None:
    torch.manual_seed(0)
    sample = datasets.load_sample("monuseg", datasets.ids("monuseg", split="train")[0])
    corners = [(0, 0), (256, 0), (0, 256), (256, 256)]
    tiles = [(sample.image[y : y + 256, x : x + 256], sample.labels[y : y + 256, x : x + 256])
             for y, x in corners]  # fmt: skip
    images = [_image_tensor(image) for image, _ in tiles]
    targets = [instance_targets(labels) for _, labels in tiles]
    print("nuclei per tile:", [len(t["boxes"]) for t in targets])
    for rois, positive in SETTINGS:
        model = build_maskrcnn("resnet101", rois_per_image=rois).train()
        model.roi_heads.fg_bg_sampler.positive_fraction = positive
        optimiser = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            loss = sum(model(images, targets).values())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            seconds.append(round(time.perf_counter() - start, 2))
        print(f"{rois} RoIs per image, {positive} positive: {seconds} s per step")


if __name__ == "__main__":
    main()
