"""``dsspn predict``: segment images with a trained checkpoint. Registered by the main app as
``app.command("predict")(predict_command)``; torch is imported only when it runs."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from dsspn_cli.engine.config import MIN_TILE, TILE
from dsspn_cli.errors import UserError

MODEL_HELP = ("A checkpoint written by 'dsspn train' (default: $DSSPN_MODEL, else the newest "
              "runs/*/checkpoints/best.pt below this folder).")


def predict_command(
    inputs: List[Path] = typer.Argument(..., help="Image files and/or folders (every .jpg, "
                                        ".jpeg and .png inside, sub-folders too), and video "
                                        "files (.mp4, .mkv, .webm, .mov, .avi, ...; needs "
                                        "PyAV), after the checkpoint when it is given first "
                                        "(CKPT IMAGE...)."),
    model: Optional[Path] = typer.Option(None, "--model", help=MODEL_HELP),
    classes: Optional[str] = typer.Option(None, "--classes", help="Only these, comma-"
                                          "separated (concept names, synsets or any WordNet "
                                          "word: person,canine,motor vehicle; a class above "
                                          "several concepts is all of them): each pixel "
                                          "gets one of them or 'other', ids 0, 1, 2... "
                                          "(other 255); only the neurons on their paths "
                                          "run (the flat head sums its probabilities into "
                                          "each)."),
    labelset: Optional[Path] = typer.Option(None, "--labelset", help="Only the classes of "
                                            "this label set (YAML or text), in its ids and "
                                            "colours; other: its ignore value."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Predict this dataset's "
                                          "classes, in its label ids (a dataset of the "
                                          "model's tree, or an alias: ade20k, vistas...). "
                                          "Default: the tree's concepts, in concept ids."),
    out: Path = typer.Option(Path("predictions"), "--out", help="Output folder."),
    level: Optional[int] = typer.Option(None, "--level", min=0, help="Stop at this depth of "
                                        "the tree (0 = the root)."),
    as_json: bool = typer.Option(False, "--json", help="Also write NAME.json: the classes "
                                 "present (the dataset's labels or the chosen classes, "
                                 "with their concepts), their pixels, tree paths and mean "
                                 "confidence."),
    tile: int = typer.Option(TILE, "--tile", help=f"Largest tile side in pixels (at least "
                             f"{MIN_TILE}); larger images run in overlapping tiles."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, "
                               "cuda or cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16, fp16 (CUDA) or "
                                  "auto (bf16 where the GPU has it)."),
    workers: int = typer.Option(2, "--workers", min=0, help="Processes decoding images."),
    html: bool = typer.Option(False, "--html", help="Also write index.html into the output "
                              "folder: every image as a thumbnail, one opened with the photo, "
                              "the prediction over it and the tree of what was predicted "
                              "(click, unfold, hover a pixel, cut at any depth); it opens from "
                              "disk. Per image NAME_page.js, NAME_thumb.jpg and NAME_photo.jpg "
                              "hold its data."),
    every: int = typer.Option(1, "--every", min=1, help="Videos: predict one frame in N (the "
                              "video then plays at its frame rate / N, lasting as long)."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Videos: also write each "
                                          "predicted frame's label map as "
                                          "DIR/<stem>_<frame:06d>_labels.png."),
    hedge: Optional[float] = typer.Option(None, "--hedge", help="Hedged prediction at this "
                                          "target accuracy (0.9: right on nine pixels in "
                                          "ten): each pixel stops at the deepest concept "
                                          "on its path whose confidence keeps it, 'vehicle' "
                                          "where 'bus' is a guess; the threshold comes from "
                                          "the calibration 'dsspn evaluate CKPT --hedge' "
                                          "saves."),
    hedge_threshold: Optional[float] = typer.Option(None, "--hedge-threshold", help="Hedged "
                                                    "prediction at this confidence, 0 (none) "
                                                    "to 1 (every pixel at the root)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="With --hedge: "
                                               "the calibration file (default: beside the "
                                               "checkpoint, CKPT.hedging.json)."),
):
    """Segment images with a trained model: for each image NAME, write NAME_labels.png
    (label ids), NAME_color.png, NAME_overlay.png and NAME_legend.png (and NAME.json with
    --json) into the output folder; with --html, index.html to explore them in a browser;
    for a video STEM.mp4, STEM_overlay.mp4 with a legend. --hedge: stop each pixel higher in
    the tree where the model is unsure."""
    from dsspn_cli.console import console, track
    from dsspn_cli.engine.predict import SUFFIXES, predict

    def bar(items, total, what, unit="images"):
        return track(items, total, what, console(stderr=True), unit)

    if inputs and _is_checkpoint(inputs[0]):       # 'dsspn predict CKPT IMAGE...', as evaluate
        checkpoint, inputs = chosen_model(inputs[0], model), inputs[1:]
    else:
        checkpoint = chosen_model(model)
    report = predict(checkpoint, inputs, dataset=dataset, out=out, level=level,
                     as_json=as_json, tile=tile, device=device, precision=precision,
                     workers=workers, classes=classes, labelset=labelset, track=bar,
                     html=html, every=every, frames=frames, hedge=hedge,
                     hedge_threshold=hedge_threshold, calibration=calibration)
    count = len(report.images)
    what = ("the chosen classes' ids" if classes or labelset else
            f"{report.dataset} label ids" if report.dataset is not None else "concept ids")
    if report.hedge is not None:
        source = report.hedge_source
        what += f", hedged at threshold {report.hedge:g}" + (
            f" for accuracy {source['target']:g} ({source['calibration']}, curve "
            f"'{source['curve']}': {100 * source['accuracy']:.1f}%)" if source else "")
    names = ", ".join(SUFFIXES) + (", .json" if as_json else "")
    if count or not report.videos:
        console().print(
            f"predicted {count} image{'s' if count != 1 else ''} ({what}, {report.device}) "
            f"into {out}: NAME{names}")
    if html and count:
        console().print(f"open {out / 'index.html'} in a browser to explore them")
    for video in report.videos:
        console().print(video_line(video, what, report.device))


def video_line(video, what: str, device: str) -> str:
    """The last line of a video's prediction: frames, frames per second, where it went."""
    one_in = f", 1 in {video.every} of {video.decoded}" if video.every > 1 else ""
    maps = f"; label maps in {video.frames_dir}" if video.label_maps else ""
    return (f"predicted {video.frames} frames of {video.video}{one_in} ({what}, {device}) "
            f"at {video.fps:.1f} frames/s into {video.output} ({video.codec}){maps}")


def _is_checkpoint(path: Path) -> bool:
    return path.suffix.lower() in (".pt", ".pth") and path.is_file()


def chosen_model(checkpoint: Path | None, model: Path | None = None) -> Path:
    """The model of predict, evaluate and export alike: a checkpoint given as the first
    argument or as --model (not two different ones), else the default (said in one line on
    stderr)."""
    from dsspn_cli.console import console
    from dsspn_cli.engine.checkpoint import find_model

    if checkpoint is not None and model is not None and checkpoint != model:
        raise UserError(f"{checkpoint} and --model {model}: give the checkpoint once")
    path, how = find_model(checkpoint or model)
    if how:
        console(stderr=True).print(how)
    return path
