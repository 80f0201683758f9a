"""Video in, video out: ``dsspn predict clip.mp4``.

A video named as a file among predict's inputs (by its suffix: ``VIDEO_SUFFIXES``) is decoded
with PyAV (FFmpeg ships inside its wheel; the optional extra ``dsspn[video]``), every frame
predicted through the path images take (``Predictor.run``: the same inference, tiles,
precision, ``--dataset``, ``--classes``, ``--level``), and written as
``OUT/<stem>_overlay.mp4``: photo and colours 50/50, as ``NAME_overlay.png``, with a legend
panel on the right of the frame.

- Three stages overlap: a thread decodes, the calling thread runs the model, a thread draws,
  encodes and writes the ``--frames`` label maps. Bounded queues of ``IN_FLIGHT`` frames join
  them, so memory stays flat and the slowest stage (the model) sets the pace. However the
  loop ends (done, an error, Ctrl-C), both threads stop within a tenth of a second or so.
- The video is written to a temporary file and renamed into place when complete
  (``files.atomic_stream``): a stopped command leaves no half-written video behind.
- ``--every N`` predicts frames 0, N, 2N, ...; the video then plays at fps/N, so it lasts as
  long as the input and shows each prediction for the time of the N frames it stands for.
- The legend lists the classes seen so far in the video, each on the row it got when it
  first appeared (rows never move, so the legend does not flicker), with its share of the
  current frame (greyed when absent from it). When more have appeared than rows fit the
  frame's height, the rows go to those with the most pixels so far, still in order of
  appearance, and a last row counts the others.
- ``--frames DIR`` writes ``DIR/<stem>_<frame>_labels.png`` (the frame's number in the input,
  six digits) as predict writes ``NAME_labels.png`` (``Predictor.label_png``).
- The codec is H.264 (libx264) where the wheel's FFmpeg has an encoder for it, else MPEG-4
  part 2; in mp4, yuv420p, so an odd frame side is padded by one black row or column. A frame
  with a display rotation (a phone held upright) is turned upright first, as photos are by
  their EXIF orientation.
"""

from __future__ import annotations

import glob
import math
import queue
import stat
import threading
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np

from dsspn_cli.errors import UserError, one_line
from dsspn_cli.files import atomic_stream, atomic_write_bytes, check_output, kind_of, stat_path

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mkv", ".webm", ".mov", ".avi", ".mpg", ".mpeg", ".ts",
                  ".m2ts", ".mts", ".wmv", ".flv", ".ogv", ".3gp")
ENCODERS = ("libx264", "libopenh264", "mpeg4")     # the first the wheel's FFmpeg has
INSTALL = "video needs PyAV: pip install 'dsspn[video]' (or pip install av)"
IN_FLIGHT = 4           # frames waiting between two stages
POLL = 0.1              # seconds a blocked stage waits before it looks whether to stop
OUTPUT = "{stem}_overlay.mp4"
FRAME_LABELS = "{stem}_{index:06d}_labels.png"
FRAME_GLOB = FRAME_LABELS.replace("{index:06d}", "*")      # any frame's label map


def require_av():
    """The ``av`` module, or the one line that says how to install it."""
    try:
        import av
    except ImportError:
        raise UserError(INSTALL) from None
    return av


# ----------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class VideoJob:
    video: Path
    stem: str
    fps: Fraction            # the input's frame rate
    frames: int              # its frame count, 0 when the container does not say
    width: int               # a frame as predicted: turned upright
    height: int
    codec: str | None = None     # the encoder (``pick_encoder``, run by ``prepare_videos``)

    @property
    def output(self) -> str:
        return OUTPUT.format(stem=self.stem)

    def predicted(self, every: int) -> int:
        """How many frames ``--every`` predicts (0: not known)."""
        return math.ceil(self.frames / every)


def split_videos(inputs: Sequence) -> tuple[list[Path], list]:
    """The videos among predict's inputs (paths with a video suffix that are not folders),
    and the other inputs. Folders are searched for images only: a video is named."""
    videos, others = [], []
    for given in inputs:
        path = Path(given)
        st = stat_path(path)
        if path.suffix.lower() in VIDEO_SUFFIXES and not (st and stat.S_ISDIR(st.st_mode)):
            videos.append(path)
        else:
            others.append(given)
    return videos, others


def prepare_videos(videos: Sequence[Path], out: Path, *, every: int = 1,
                   frames: str | Path | None = None, reads: Sequence = ()) -> list[VideoJob]:
    """Before any work: PyAV is there with a video encoder (``pick_encoder``, carried in each
    job), every video opens and decodes its first frame, no two write the same outputs, and
    the outputs (``OUT/<stem>_overlay.mp4``, ``--frames DIR``'s label maps) pass
    ``check_output`` against everything the command reads."""
    if every < 1:
        raise UserError(f"--every {every}: give 1 (every frame) or more")
    if not videos:
        if every != 1 or frames is not None:
            option = "--frames" if frames is not None else f"--every {every}"
            raise UserError(f"{option}: applies to videos (a file such as clip.mp4 among the "
                            "inputs) and none was given")
        return []
    av = require_av()
    codec = pick_encoder(av)
    jobs = [replace(probe(av, video), codec=codec) for video in videos]
    owners: dict[str, Path] = {}
    for job in jobs:
        if job.stem in owners:
            raise UserError(f"{owners[job.stem]} and {job.video} would both write "
                            f"{job.output}; rename one or predict them separately")
        owners[job.stem] = job.video
    check_output(out, folder=True, inputs=reads, writes=[job.output for job in jobs])
    if frames is not None:
        # The frames' numbers are known once decoded: the check covers the files of that
        # pattern already there; new ones are created without following a link.
        check_output(frames, folder=True, inputs=reads, writes=[
            FRAME_GLOB.format(stem=glob.escape(job.stem)) for job in jobs])
    return jobs


def probe(av, path: Path) -> VideoJob:
    """What predict needs to know of a video before the work; its first frame is decoded, so
    that an unreadable file stops with its name before the model loads."""
    st = stat_path(path)
    if st is None:
        raise UserError(f"{path}: no such video; check the path")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{path}: is {kind_of(st.st_mode)}, not a video file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UserError(f"{path}: holds no video stream; give a video file")
            stream = container.streams.video[0]
            fps = stream.average_rate or stream.guessed_rate or Fraction(25)
            first = next(container.decode(stream), None)
            if first is None:
                raise UserError(f"{path}: holds no frame that can be decoded; check the file")
            height, width = _upright(first).shape[:2]
            return VideoJob(path, path.stem, Fraction(fps), _frame_count(stream, container,
                                                                           fps), width, height)
    except (av.error.FFmpegError, OSError) as exc:
        raise UserError(one_line(f"{path}: cannot be read as a video ({exc}); give a video "
                                 "file FFmpeg reads (mp4, mkv, webm, mov, avi, ...)")) from None


def _frame_count(stream, container, fps: Fraction) -> int:
    """The frames the container says it holds, else its duration times the frame rate, else
    0 (unknown: progress then counts without a total)."""
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return round(stream.duration * stream.time_base * fps)
    if container.duration:
        return round(Fraction(container.duration, 1_000_000) * fps)
    return 0


def _upright(frame) -> np.ndarray:
    """A decoded frame as H x W x 3 uint8 RGB, turned by its display rotation (the angle the
    player turns it counter-clockwise; PyAV 14+ reads it)."""
    image = frame.to_ndarray(format="rgb24")
    turns = round(getattr(frame, "rotation", 0) / 90) % 4
    return np.ascontiguousarray(np.rot90(image, turns)) if turns else image


# ----------------------------------------------------------------------------------- legend


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)        # Pillow 10.1+: a scalable font
    except TypeError:
        return ImageFont.load_default()


class LegendPanel:
    """The legend drawn beside each frame (see the module's notes): classes seen so far on
    fixed rows, each with its share of the current frame."""

    BACKGROUND, INK, FADED = (255, 255, 255), (20, 20, 20), (160, 160, 160)

    def __init__(self, predictor, height: int):
        self.predictor, self.height = predictor, height
        self.size = max(9, min(24, round(height / 36)))     # the font, in pixels
        self.row = round(self.size * 1.5)
        self.width = self.size * 17
        self.rows = max(1, (height - self.row // 3) // self.row)
        self.font = _font(self.size)
        self.first: dict[int, int] = {}         # value -> order of first appearance
        self.totals = np.zeros(len(predictor.value_names), dtype=np.int64)
        self.lines: dict[int, str] = {}         # value -> its name, fitted to the panel

    def name(self, value: int) -> str:
        """A value's line, as legend_png writes it ('vegetation [21] (plant-stuff)')."""
        from dsspn_cli.engine.predict import legend_text

        predictor = self.predictor
        named = predictor.dataset is not None or predictor.classes is not None
        label = int(predictor.value_label[value])
        return legend_text({"name": predictor.value_names[value], "label": label if named
                            and label >= 0 else None,
                            "concepts": predictor.value_concepts[value]})

    def shown(self) -> tuple[list[int], int]:
        """The values on the rows, in order of first appearance, and how many seen are
        left out (summed up on the last row)."""
        seen = sorted(self.first, key=self.first.get)
        if len(seen) <= self.rows:
            return seen, 0
        most = sorted(seen, key=lambda v: (-self.totals[v], self.first[v]))[:self.rows - 1]
        return sorted(most, key=self.first.get), len(seen) - self.rows + 1

    def draw(self, values: np.ndarray) -> np.ndarray:
        """The panel (height x width x 3 uint8) for a frame's predicted map."""
        from PIL import Image, ImageDraw

        counts = np.bincount(values.ravel(), minlength=len(self.totals))
        self.totals += counts
        # Classes new in the same frame: the one with most pixels first, as legend_png.
        for value in sorted(np.flatnonzero(counts), key=lambda v: -counts[v]):
            self.first.setdefault(int(value), len(self.first))
        shown, rest = self.shown()
        panel = Image.new("RGB", (self.width, self.height), self.BACKGROUND)
        draw = ImageDraw.Draw(panel)
        pad, swatch = self.size // 2, self.size
        share_width = draw.textlength("100.0%", font=self.font)
        for i, value in enumerate(shown):
            top = pad // 2 + i * self.row
            ink = self.INK if counts[value] else self.FADED
            draw.rectangle([pad, top, pad + swatch, top + swatch],
                           fill=tuple(int(c) for c in self.predictor.colours[value]),
                           outline=(90, 90, 90))
            if value not in self.lines:
                room = self.width - 3 * pad - swatch - share_width
                self.lines[value] = _fitted(draw, self.name(value), self.font, room)
            draw.text((2 * pad + swatch, top), self.lines[value], fill=ink, font=self.font)
            share = f"{100 * counts[value] / values.size:.1f}%"
            draw.text((self.width - pad - draw.textlength(share, font=self.font), top), share,
                      fill=ink, font=self.font)
        if rest:
            draw.text((2 * pad + swatch, pad // 2 + len(shown) * self.row), f"{rest} more",
                      fill=self.FADED, font=self.font)
        return np.asarray(panel)


def _fitted(draw, text: str, font, room: float) -> str:
    """``text``, cut with an ellipsis to fit ``room`` pixels."""
    if draw.textlength(text, font=font) <= room:
        return text
    low, high = 0, len(text)
    while low < high:                   # the longest prefix that fits with the ellipsis
        middle = (low + high + 1) // 2
        if draw.textlength(text[:middle] + "...", font=font) <= room:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "..."


# ----------------------------------------------------------------------------------- stages


class _End:
    """The last item a stage passes on."""


END = _End()


class _Stopped(Exception):
    """The command is ending: a stage leaves its work."""


class _Stage(threading.Thread):
    """A thread running one stage; what it raised is kept for the calling thread to raise.
    Daemon: even one stuck inside a library call never keeps the process from exiting."""

    def __init__(self, name: str, stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self.stop, self.error = stop, None

    def run(self) -> None:
        try:
            self.work()
        except _Stopped:
            pass
        except BaseException as exc:        # told by the calling thread (``check``)
            self.error = exc

    def work(self) -> None:
        raise NotImplementedError

    def put(self, channel: queue.Queue, item) -> None:
        while True:
            try:
                channel.put(item, timeout=POLL)
                return
            except queue.Full:
                if self.stop.is_set():
                    raise _Stopped() from None

    def take(self, channel: queue.Queue):
        while True:
            try:
                return channel.get(timeout=POLL)
            except queue.Empty:
                if self.stop.is_set():
                    raise _Stopped() from None


class _Decoder(_Stage):
    """Decodes the video and passes on (frame number, upright RGB frame) for each frame to
    predict, then END."""

    def __init__(self, av, job: VideoJob, every: int, frames: queue.Queue,
                 stop: threading.Event):
        super().__init__("dsspn-decode", stop)
        self.av, self.job, self.every, self.frames = av, job, every, frames
        self.decoded = 0

    def work(self) -> None:
        with self.av.open(str(self.job.video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"         # FFmpeg's own frame threads
            for index, frame in enumerate(container.decode(stream)):
                self.decoded = index + 1
                if index % self.every == 0:
                    image = _upright(frame)
                    if image.shape[:2] != (self.job.height, self.job.width):
                        image = _resized(image, self.job.width, self.job.height)
                    self.put(self.frames, (index, image))
                if self.stop.is_set():
                    raise _Stopped()
        self.put(self.frames, END)


def _resized(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """A frame whose size changed mid-stream, scaled to the first frame's: one video out."""
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((width, height), Image.BILINEAR))


class _Encoder(_Stage):
    """Blends, draws the legend, encodes each predicted frame, writes its label map with
    ``--frames``; closes the video after END."""

    def __init__(self, av, job: VideoJob, predictor, every: int, stream, frames_dir,
                 predicted: queue.Queue, stop: threading.Event):
        super().__init__("dsspn-encode", stop)
        self.av, self.job, self.predictor, self.every = av, job, predictor, every
        self.stream, self.frames_dir, self.predicted = stream, frames_dir, predicted
        self.written = self.label_maps = 0
        self.codec = job.codec or pick_encoder(av)

    def work(self) -> None:
        from dsspn_cli.engine.predict import blend

        legend = LegendPanel(self.predictor, self.job.height)
        width = self.job.width + legend.width
        container = self.av.open(self.stream, "w", format="mp4")
        try:
            video = container.add_stream(self.codec, rate=self.job.fps / self.every)
            video.width, video.height = width + width % 2, self.job.height + self.job.height % 2
            video.pix_fmt = "yuv420p"
            if self.codec == "libx264":
                # veryfast: the encoder shares the processor with the model.
                video.options = {"crf": "20", "preset": "veryfast"}
            else:
                video.bit_rate = max(1_000_000, int(video.width * video.height * 4))
            while (item := self.take(self.predicted)) is not END:
                index, image, values = item
                picture = np.concatenate([blend(image, self.predictor.colours[values]),
                                          legend.draw(values)], axis=1)
                frame = self.av.VideoFrame.from_ndarray(_even(picture), format="rgb24")
                frame.pts = self.written
                for packet in video.encode(frame):
                    container.mux(packet)
                self.written += 1
                if self.frames_dir is not None:
                    name = FRAME_LABELS.format(stem=self.job.stem, index=index)
                    atomic_write_bytes(Path(self.frames_dir) / name, self.predictor.label_png(
                        self.predictor.labels(values)), within=self.frames_dir)
                    self.label_maps += 1
            for packet in video.encode():       # what the encoder still holds
                container.mux(packet)
        finally:
            container.close()


def _even(picture: np.ndarray) -> np.ndarray:
    """yuv420p halves the colour planes: an odd side gets one black row or column."""
    height, width = picture.shape[:2]
    if height % 2 == 0 and width % 2 == 0:
        return picture
    return np.pad(picture, ((0, height % 2), (0, width % 2), (0, 0)))


def pick_encoder(av) -> str:
    """The first of ``ENCODERS`` the wheel's FFmpeg can encode with."""
    for name in ENCODERS:
        if name in av.codecs_available:
            try:
                av.codec.Codec(name, "w")
            except Exception:           # a decoder only, under this name
                continue
            return name
    raise UserError(f"this PyAV's FFmpeg has none of the video encoders {', '.join(ENCODERS)};"
                    " install the PyAV wheel from PyPI (pip install av)")


# ----------------------------------------------------------------------------------- run


@dataclass
class VideoReport:
    video: Path
    output: Path
    frames: int              # predicted and written
    decoded: int             # read from the input
    every: int
    seconds: float
    codec: str
    label_maps: int = 0
    frames_dir: Path | None = None

    @property
    def fps(self) -> float:
        """Frames predicted per second, decoding and encoding included."""
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def predict_video(predictor, job: VideoJob, out: Path, *, every: int = 1,
                  frames: str | Path | None = None, track=None) -> VideoReport:
    """Predict ``job``'s video frame by frame (one in ``every``) and write
    ``OUT/<stem>_overlay.mp4`` (and, with ``frames``, the label maps there). ``track(items,
    total, what, unit=...)`` may wrap the frame loop (a progress display)."""
    av = require_av()
    started = time.perf_counter()
    stop = threading.Event()
    decoded, predicted = queue.Queue(IN_FLIGHT), queue.Queue(IN_FLIGHT)
    with atomic_stream(out / job.output, within=out) as stream:
        decoder = _Decoder(av, job, every, decoded, stop)
        encoder = _Encoder(av, job, predictor, every, stream, frames, predicted, stop)
        try:
            decoder.start()
            encoder.start()
            items = _arriving(decoded, decoder, job)
            if track is not None:
                items = track(items, job.predicted(every), f"predicting {job.video.name}",
                              unit="frames")
            for index, image in items:
                values, _ = predictor.run(image, confidence=False)
                _handing_on(predicted, (index, image, values), encoder, job)
            _handing_on(predicted, END, encoder, job)
            while encoder.is_alive():           # the last frames encoded, the file closed
                encoder.join(POLL)
            _check(encoder, job)
            if encoder.written == 0:
                raise UserError(f"{job.video}: no frame could be decoded; check the file")
        finally:
            stop.set()              # however the loop ended: both threads leave their work
            for stage in (decoder, encoder):
                if stage.is_alive():
                    stage.join(timeout=5)
    return VideoReport(job.video, out / job.output, encoder.written, decoder.decoded, every,
                       time.perf_counter() - started, encoder.codec, encoder.label_maps,
                       Path(frames) if frames is not None else None)


def _arriving(channel: queue.Queue, decoder: _Decoder, job: VideoJob):
    """The decoder's frames as they come, until END; its error, if it fails, as one line."""
    while True:
        try:
            item = channel.get(timeout=POLL)
        except queue.Empty:
            if not decoder.is_alive() and channel.empty():
                _check(decoder, job)
                return
            continue
        if item is END:
            return
        yield item


def _handing_on(channel: queue.Queue, item, encoder: _Encoder, job: VideoJob) -> None:
    """Pass ``item`` to the encoder, waiting for room; its error, if it failed, as one line."""
    while True:
        try:
            channel.put(item, timeout=POLL)
            return
        except queue.Full:
            if not encoder.is_alive():
                _check(encoder, job)
                raise UserError(f"{job.video}: the video writer stopped early; report this "
                                "as a bug") from None


def _check(stage: _Stage, job: VideoJob) -> None:
    """Raise what a stage raised: said for the user already (a UserError) as it is, a
    decoding or encoding failure as one line naming the video."""
    error = stage.error
    if error is None:
        return
    if isinstance(error, UserError):
        raise error
    if isinstance(stage, _Decoder):
        raise UserError(one_line(f"{job.video}: decoding failed after {stage.decoded} "
                                 f"frames ({type(error).__name__}: {error}); the file may "
                                 "be damaged")) from error
    raise UserError(one_line(f"{job.output}: encoding failed ({type(error).__name__}: "
                             f"{error})")) from error


__all__ = ["VIDEO_SUFFIXES", "ENCODERS", "INSTALL", "VideoJob", "VideoReport", "LegendPanel",
           "split_videos", "prepare_videos", "probe", "predict_video", "pick_encoder",
           "require_av"]
