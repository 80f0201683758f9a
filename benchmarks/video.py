"""Video prediction speed: frames per second of ``dsspn predict clip.mp4`` against ``dsspn
predict`` on the same frames as PNG files, with the same model on the same device.

The clip pans a 256x512 window (``--size``) across wide procedural street scenes (the sample
data's Cityscapes layout), encoded with libx264; its decoded frames are written as PNG files,
so both paths predict exactly the same pixels. Each path is timed over its frame loop, model
loading left out (the same for both): for the images, from the loop's start to the last
image's files written (``predict``'s progress hook); for the video, ``VideoReport.seconds``,
from the threads' start to the finished file renamed into place. A third figure is the
model alone on the same frames already in memory (``Predictor.run``, nothing read or
written): the most either path can reach. One warm-up call first,
then the paths alternate ``--repeats`` times and the best of each is kept.

``--threads N`` sets torch's threads. On a machine other jobs keep busy, use 1: with two,
every parallel region of the model waits for both threads to be scheduled, and the figures
swing three- to tenfold from run to run whatever the path.

    python benchmarks/video.py [--frames 60] [--size 256x512] [--device auto] \\
        [--dataset cityscapes] [--model CKPT] [--threads N] [--repeats 2] [--json FILE]
"""
import argparse
import json
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from dsspn_cli.engine.predict import predict
from dsspn_cli.engine.world import resolve_device


def write_clip(folder: Path, frames: int, height: int, width: int) -> tuple[Path, Path]:
    """clip.mp4 panning across wide sample scenes, and its decoded frames as PNG files."""
    import av
    from PIL import Image

    from dsspn_cli.data.sample import write_sample_data

    scenes = max(1, frames // 15)
    write_sample_data(folder / "data", seed=0, images=scenes, size=(height, 2 * width))
    photos = sorted((folder / "data" / "cityscapes" / "leftImg8bit" / "train").rglob("*.png"))
    wide = [np.asarray(Image.open(path).convert("RGB")) for path in photos[:scenes]]
    clip = folder / "clip.mp4"
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "18"}
        for i in range(frames):
            scene, step = divmod(i, -(-frames // scenes))
            x = min(width, step * width // 15)
            picture = np.ascontiguousarray(wide[scene % len(wide)][:, x:x + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    pngs = folder / "frames"
    pngs.mkdir()
    with av.open(str(clip)) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(pngs / f"clip_{i:06d}.png")
    return clip, pngs


def random_model(path: Path) -> Path:
    """DSSPN on ResNet-18 (output stride 16, as the demo trains it), random weights."""
    from dsspn_cli.engine.checkpoint import save_checkpoint
    from dsspn_cli.engine.config import TrainConfig
    from dsspn_cli.hierarchy.tables import MaskingTable
    from dsspn_cli.hierarchy.tree import load_tree
    from dsspn_cli.model.segmenter import build_model

    torch.manual_seed(0)
    tree = load_tree()
    config = TrainConfig(backbone="resnet18", output_stride=16)
    model = build_model(MaskingTable.from_tree(tree), config)
    save_checkpoint(path, model=model, tree=tree, config=config.to_dict(), step=0, epoch=0)
    return path


class LoopTimer:
    """A ``predict`` progress hook that times the loop it wraps."""

    def __init__(self):
        self.seconds = None

    def __call__(self, items, total, what, unit="images"):
        started = time.perf_counter()
        yield from items
        self.seconds = time.perf_counter() - started


def run_images(model, pngs, out, args, frames):
    timer = LoopTimer()
    started = time.perf_counter()
    predict(model, [pngs], out=out, dataset=args.dataset, device=args.device,
            workers=args.workers, track=timer)
    return {"frames_per_s": frames / timer.seconds, "loop_seconds": timer.seconds,
            "call_seconds": time.perf_counter() - started}


def run_video(model, clip, out, args, frames_dir=None):
    started = time.perf_counter()
    report = predict(model, [clip], out=out, dataset=args.dataset, device=args.device,
                     frames=frames_dir)
    video = report.videos[0]
    return {"frames_per_s": video.fps, "loop_seconds": video.seconds,
            "call_seconds": time.perf_counter() - started, "codec": video.codec}


def run_model_alone(model, pngs, args):
    from PIL import Image

    from dsspn_cli.engine.checkpoint import load_model
    from dsspn_cli.engine.predict import Predictor

    device = resolve_device(args.device)
    net, _, tree, _ = load_model(model, device)
    dataset = tree.dataset_name(args.dataset) if args.dataset else None
    predictor = Predictor(net, tree, dataset, device=device)
    frames = [np.array(Image.open(path).convert("RGB")) for path in sorted(pngs.iterdir())]
    started = time.perf_counter()
    for frame in frames:
        predictor.run(frame)
    seconds = time.perf_counter() - started
    return {"frames_per_s": len(frames) / seconds, "loop_seconds": seconds,
            "call_seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="256x512", help="HxW of the clip")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="cityscapes", help="'' for the tree's concepts")
    parser.add_argument("--model", type=Path, help="a checkpoint (default: random weights)")
    parser.add_argument("--workers", type=int, default=2, help="image decoding processes")
    parser.add_argument("--threads", type=int, help="torch's threads (default: its own)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    args.dataset = args.dataset or None
    try:
        import av
    except ImportError:
        sys.exit("benchmarks/video.py: needs PyAV: pip install 'dsspn[video]' (or pip install "
                 "av)")
    if args.threads:
        torch.set_num_threads(args.threads)
    height, width = (int(v) for v in args.size.split("x"))
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip, pngs = write_clip(tmp, args.frames, height, width)
        model = args.model or random_model(tmp / "model.pt")
        warm = tmp / "warm"
        warm.mkdir()
        for png in sorted(pngs.iterdir())[:2]:
            (warm / png.name).write_bytes(png.read_bytes())
        predict(model, [warm], out=tmp / "out-warm", dataset=args.dataset, device=args.device)
        rows = {"model alone, frames in memory": [], "predict frames/*.png": [],
                "predict clip.mp4": [], "predict clip.mp4 --frames DIR": []}
        for repeat in range(args.repeats):
            rows["model alone, frames in memory"].append(run_model_alone(model, pngs, args))
            rows["predict frames/*.png"].append(
                run_images(model, pngs, tmp / f"out-images-{repeat}", args, args.frames))
            rows["predict clip.mp4"].append(run_video(model, clip, tmp / f"out-video-{repeat}",
                                                      args))
            rows["predict clip.mp4 --frames DIR"].append(
                run_video(model, clip, tmp / f"out-frames-{repeat}", args,
                          tmp / f"labels-{repeat}"))
    best = {name: max(runs, key=lambda r: r["frames_per_s"]) for name, runs in rows.items()}
    images = best["predict frames/*.png"]["frames_per_s"]
    threads = torch.get_num_threads()
    print(f"{args.frames} frames of {height}x{width}, DSSPN ResNet-18 "
          f"({'random weights' if args.model is None else args.model}), dataset "
          f"{args.dataset or 'none (concepts)'}, {device} (torch threads: {threads}, "
          f"{platform.processor() or platform.machine()}), torch {torch.__version__}, PyAV "
          f"{av.__version__}; best of {args.repeats}")
    print(f"| {'path':<32} | frames/s | loop s | call s | images fps / this |")
    print(f"| {'-' * 32} | -------- | ------ | ------ | ----------------- |")
    for name, result in best.items():
        print(f"| {name:<32} | {result['frames_per_s']:8.2f} | {result['loop_seconds']:6.1f} "
              f"| {result['call_seconds']:6.1f} | {images / result['frames_per_s']:17.2f} |")
    ratio = images / best["predict clip.mp4"]["frames_per_s"]
    print(f"video within 1.2x of the images' frames per second: "
          f"{'yes' if ratio <= 1.2 else 'NO'} ({ratio:.2f}x)")
    if args.json:
        args.json.write_text(json.dumps({
            "frames": args.frames, "size": [height, width], "device": str(device),
            "threads": threads, "dataset": args.dataset, "torch": torch.__version__,
            "av": av.__version__, "runs": rows, "best": best, "ratio": ratio}, indent=1) + "\n")


if __name__ == "__main__":
    main()
