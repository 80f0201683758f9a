"""The procedural scenes, and the drawing of one sample image: which scene, from which seed.

An image's RNG is seeded by (seed, dataset, split, index) alone, so every image can be drawn
again on its own (the tests do), whatever the number of images drawn before it.

A scene takes every number from the canvas's one RNG, in the order its code runs: the parts of
a scene are drawn in a fixed order, and moving a draw (or a paint: each paint draws its shade)
changes the rest of that image.
"""

from __future__ import annotations

import numpy as np

from dsspn_cli.data.sample.canvas import Canvas, render
from dsspn_cli.data.sample.concepts import DATASETS, HELD_OUT, ConceptKit
from dsspn_cli.data.sample.scenes.indoor import indoor_scene
from dsspn_cli.data.sample.scenes.landscape import landscape_scene
from dsspn_cli.data.sample.scenes.street import street_scene

# The scene types, in the order SCENE_MIX gives their shares (the order of the RNG's choice).
SCENES = {"street": street_scene, "indoor": indoor_scene, "landscape": landscape_scene}

# Scene mix per dataset (street, indoor, landscape). CamVid films streets; VOC's classes are
# mostly animals, furniture and vehicles.
SCENE_MIX = {"cityscapes": (1.0, 0.0, 0.0), "mapillary": (1.0, 0.0, 0.0),
             "ade": (0.4, 0.4, 0.2), "coco": (0.4, 0.4, 0.2),
             "camvid": (1.0, 0.0, 0.0), "voc": (0.3, 0.4, 0.3)}

# Each dataset's place in the seed. The held-out sets come after the four, so the four keep
# the images they always had.
SEED_INDEX = {name: i for i, name in enumerate(DATASETS + HELD_OUT)}


def draw_scene(kit: ConceptKit, dataset: str, split: int, index: int, seed: int, size):
    """One scene: (RGB image, canvas) for image ``index`` of a split (0 train, 1 val,
    2 test); the canvas holds the concept map and the COCO thing instances."""
    rng = np.random.default_rng(np.random.SeedSequence(
        [seed % 2**63, SEED_INDEX[dataset], split, index]))
    kinds = list(SCENES)
    scene = kinds[int(rng.choice(len(kinds), p=SCENE_MIX[dataset]))]
    cv = Canvas(kit, size[0], size[1], rng)
    SCENES[scene](cv)
    return render(cv), cv
