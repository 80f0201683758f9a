"""The landscape scene (ADE20K and COCO-Stuff): sky and clouds over a mountain ridge, grass,
maybe a beach with the sea, trees and bushes, grazing animals, birds.
"""

from __future__ import annotations

import numpy as np

from dsspn_cli.data.sample.canvas import Canvas
from dsspn_cli.data.sample.shapes import animal, bird, blob, rect, tree_or_palm


def landscape_scene(cv: Canvas):
    rng, h, w = cv.rng, cv.h, cv.w
    yh = h * rng.uniform(0.4, 0.55)
    cv.paint("sky-other", rect(0, 0, w, yh + 1))
    for _ in range(int(rng.integers(0, 4))):
        cv.paint("clouds", [blob(rng, w * rng.uniform(0, 1), yh * rng.uniform(0.1, 0.5),
                                 w * rng.uniform(0.06, 0.14), h * rng.uniform(0.04, 0.08))])
    n = 14
    xs = np.linspace(-w * 0.05, w * 1.05, n)
    heights = np.abs(np.cumsum(rng.normal(0, 0.08, n))) + rng.uniform(0.05, 0.2)
    ridge = np.stack([xs, yh - h * np.clip(heights, 0.03, 0.35)], 1).ravel().tolist()
    cv.paint("mountain", [[-w * 0.05, yh + 1, *ridge, w * 1.05, yh + 1]],
             [([[-w * 0.05, yh + 1, *ridge, w * 1.05, yh + 1]], 1.0)])
    cv.paint("grass", rect(0, yh, w, h))
    beach = rng.random() < 0.5
    ground_top = yh
    if beach:
        ys = yh + h * rng.uniform(0.08, 0.2)
        cv.paint("sea", rect(0, yh, w, ys))
        ye = ys + h * rng.uniform(0.08, 0.18)
        cv.paint("sand", [[0, ys, w, ys, w, ye + h * 0.03, 0, ye - h * 0.03]])
        ground_top = ye
    span = h - yh
    for _ in range(int(rng.integers(0, 4))):
        y = ground_top + (h - ground_top) * rng.uniform(0.0, 0.3)
        kind = "palm" if beach and rng.random() < 0.6 else "tree"
        cv.add(tree_or_palm(rng, kind), w * rng.uniform(0, 1), y,
               h * (0.35 + 0.6 * (y - yh) / span))
    for _ in range(int(rng.integers(0, 3))):
        y = ground_top + (h - ground_top) * rng.uniform(0.0, 0.3)
        r = h * rng.uniform(0.04, 0.08)
        cv.add([("bush", [blob(rng, 0, -r * 0.8, r * 1.6, r)], [])], w * rng.uniform(0, 1),
               y, 1.0)
    sizes = {"horse": 2.4, "cow": 2.4, "dog": 0.9}
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(list(sizes), p=[0.4, 0.4, 0.2]))
        y = ground_top + (h - ground_top) * rng.uniform(0.2, 0.9)
        scale = sizes[kind] * h * 0.12 * (0.4 + (y - yh) / span)
        cv.add(animal(kind, rng), w * rng.uniform(0.1, 0.9), y, scale,
               1.0 if rng.random() < 0.5 else -1.0)
    for _ in range(int(rng.integers(0, 3))):
        cv.add(bird(rng), w * rng.uniform(0.05, 0.95), yh * rng.uniform(0.15, 0.6),
               h * rng.uniform(0.05, 0.1), 1.0 if rng.random() < 0.5 else -1.0)
    cv.finish()
