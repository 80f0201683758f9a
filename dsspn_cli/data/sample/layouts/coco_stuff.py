"""The sample data in COCO-Stuff 164k's layout: ``images/{train2017,val2017}/<id>.jpg``,
``stuffthingmaps_trainval2017/{train2017,val2017}/<id>.png`` and
``annotations/{stuff,instances}_{train2017,val2017}.json``.

Thing objects are polygons (``instances_*.json``), listed back to front; their pixels in the
PNG maps are pycocotools' own rasterisation of those polygons, and things are drawn after all
stuff, so painting the stuff RLEs (``stuff_*.json``) and then the instances in file order,
each with ``category_id - 1``, reproduces the PNG map on every labelled pixel (and leaves
exactly the 255 pixels unpainted).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from dsspn_cli.data.sample.concepts import ConceptKit
from dsspn_cli.data.sample.layouts.encode import jpg_bytes, json_bytes, png_bytes, write_file
from dsspn_cli.data.sample.scenes import draw_scene


def coco_categories(kit: ConceptKit):
    """(thing categories, stuff categories) as the JSON lists them: ids one above the PNG
    values, and the stuff list ending in 183 'other' as in the real file."""
    coco = kit.labelsets["coco"]
    things, stuff = [], []
    for label in sorted(coco.labels, key=lambda item: item.id):
        if not label.mapped:
            continue
        entry = {"supercategory": label.extra.get("supercategory", ""), "id": label.id + 1,
                 "name": label.name}
        (things if label.id < 91 else stuff).append(entry)
    stuff.append({"supercategory": "other", "id": 183, "name": "other"})
    return things, stuff


def write_coco(kit: ConceptKit, root: Path, seed, counts, size):
    """COCO-Stuff 164k: JPEG images named by random COCO ids (unique across the splits),
    PNG label maps, and the stuff (RLE) and instances (polygon) JSON of each split."""
    summary = {}
    h, w = size
    things, stuff = coco_categories(kit)
    stuff_ids = {c["id"] - 1 for c in stuff if c["id"] != 183}
    total = counts["train"] + counts["val"]
    id_rng = np.random.default_rng(np.random.SeedSequence([seed % 2**63, 99]))
    all_ids = id_rng.choice(581929, size=total, replace=False) + 1
    ids = {"train": sorted(int(v) for v in all_ids[:counts["train"]]),
           "val": sorted(int(v) for v in all_ids[counts["train"]:])}
    info = {"description": "dsspn procedural sample data in the COCO-Stuff 164k layout "
                           "(drawn scenes, not real photos)", "version": "1.0", "year": 2017,
            "contributor": "dsspn", "url": "", "date_created": ""}
    for s, (split, folder) in enumerate((("train", "train2017"), ("val", "val2017"))):
        images, inst_anns, stuff_anns = [], [], []
        for i in range(counts[split]):
            image, cv = draw_scene(kit, "coco", s, i, seed, size)
            image_id = ids[split][i]
            name = f"{image_id:012d}"
            labels = kit.lut["coco"][cv.cmap]
            write_file(root / "images" / folder / f"{name}.jpg", jpg_bytes(image))
            write_file(root / "stuffthingmaps_trainval2017" / folder / f"{name}.png",
                       png_bytes(labels, "L"))
            images.append({"license": 0, "file_name": f"{name}.jpg", "coco_url": "",
                           "height": h, "width": w, "date_captured": "", "flickr_url": "",
                           "id": image_id})
            for ci, polys, mask in cv.instances:
                rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
                bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
                inst_anns.append({"segmentation": polys, "area": int(mask.sum()),
                                  "iscrowd": 0, "image_id": image_id, "bbox": bbox,
                                  "category_id": int(kit.lut["coco"][ci]) + 1,
                                  "id": len(inst_anns) + 1})
            for label in np.unique(labels):
                if int(label) not in stuff_ids:
                    continue
                mask = np.asfortranarray((labels == label).astype(np.uint8))
                rle = mask_utils.encode(mask)
                bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
                stuff_anns.append({"segmentation": {"size": [h, w],
                                                    "counts": rle["counts"].decode("ascii")},
                                   "area": int(mask.sum()), "iscrowd": 0,
                                   "image_id": image_id, "bbox": bbox,
                                   "category_id": int(label) + 1,
                                   "id": 10_000_000 + len(stuff_anns) + 1})
        ann = root / "annotations"
        write_file(ann / f"instances_{folder}.json", json_bytes({
            "info": info, "licenses": [], "images": images, "annotations": inst_anns,
            "categories": things}))
        write_file(ann / f"stuff_{folder}.json", json_bytes({
            "info": info, "licenses": [], "images": images, "annotations": stuff_anns,
            "categories": stuff}))
        summary[split] = counts[split]
    return summary
