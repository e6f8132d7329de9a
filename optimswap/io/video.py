"""Clips in and out: a video file (decoded and encoded by PyAV, whose wheel ships FFmpeg; no system FFmpeg) or a
folder of frames (lossless). A written video has the source's size, frame rate and frame count, and the source's
sound track copied as it is (no re-encoding)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from optimswap.errors import ImageError
from optimswap.io.image import IMAGE_SUFFIXES, list_images, read_image

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"}


@dataclass(frozen=True)
class Clip:
    """A clip's frames and what it takes to write one like it."""

    path: Path  # a video file or a folder of frames
    frames: int
    width: int
    height: int
    fps: Fraction | None  # None: a folder of frames has no rate
    audio: bool  # the file has a sound track
    names: tuple[str, ...]  # one per frame: the folder's file names, or the frame numbers

    @property
    def is_folder(self) -> bool:
        return self.path.is_dir()


def is_video_path(path: str | os.PathLike) -> bool:
    """A video file by its extension (a folder of frames is a clip too, see ``open_clip``)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _av():
    import av  # imported here: the stills never need it

    return av


def open_clip(path: str | os.PathLike) -> Clip:
    """The clip at ``path`` (a video file or a folder of frames), its frames counted; ImageError when it is not
    one."""
    path = Path(path)
    if path.is_dir():
        frames = list_images(path)
        first = read_image(frames[0])
        return Clip(path, len(frames), first.shape[1], first.shape[0], None, False,
                    tuple(p.stem for p in frames))
    if not is_video_path(path):
        raise ImageError(f"{path}: not a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder of frames")
    av = _av()
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ImageError(f"{path}: no video stream")
            stream = container.streams.video[0]
            audio = bool(container.streams.audio)
            count = sum(1 for _ in container.decode(stream))  # the header's count is missing or wrong in some files
            width, height, fps = stream.codec_context.width, stream.codec_context.height, stream.average_rate
    except av.error.FFmpegError as err:
        raise ImageError(f"{path}: not a readable video ({err})") from err
    if count == 0:
        raise ImageError(f"{path}: the video has no frames")
    return Clip(path, count, width, height, Fraction(fps) if fps else None, audio,
                tuple(f"{i:06d}" for i in range(count)))


def read_frames(clip: Clip) -> Iterator[np.ndarray]:
    """The clip's frames in order, RGB uint8 (H, W, 3)."""
    if clip.is_folder:
        for p in list_images(clip.path):
            frame = read_image(p)
            if frame.shape[:2] != (clip.height, clip.width):
                raise ImageError(f"{p}: {frame.shape[1]}x{frame.shape[0]}, but the first frame is "
                                 f"{clip.width}x{clip.height}")
            yield frame
        return
    av = _av()
    with av.open(str(clip.path)) as container:
        for frame in container.decode(container.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def write_video(path: Path, frames: Iterable[np.ndarray], fps: Fraction, sound_from: Path | None = None,
                crf: int = 18) -> None:
    """Encode ``frames`` (RGB uint8) as H.264 at ``fps`` into ``path`` (its container from the extension), with the
    sound track of ``sound_from`` copied packet by packet, timestamps unchanged."""
    av = _av()
    with av.open(str(path), "w") as out:
        stream = None
        for image in frames:
            if stream is None:
                stream = out.add_stream("libx264", rate=fps)
                stream.height, stream.width = image.shape[:2]
                # 4:2:0 halves the colour resolution and needs even sides; 4:4:4 keeps odd-sized frames whole
                stream.pix_fmt = "yuv420p" if image.shape[0] % 2 == 0 and image.shape[1] % 2 == 0 else "yuv444p"
                stream.options = {"crf": str(crf)}
                sound = _copy_sound_streams(out, sound_from)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                out.mux(packet)
        if stream is None:
            raise ValueError("no frames to write")
        for packet in stream.encode():
            out.mux(packet)
        if sound is not None:
            source, copies = sound
            with source:
                for packet in source.demux(*copies):
                    if packet.dts is not None:  # the demuxer's empty packet at the end of each stream
                        packet.stream = copies[packet.stream]
                        out.mux(packet)


def _copy_sound_streams(out, sound_from: Path | None):
    """The source container and its audio streams mapped to copies in ``out`` (None: nothing to copy)."""
    if sound_from is None or Path(sound_from).is_dir():
        return None
    source = _av().open(str(sound_from))
    if not source.streams.audio:
        source.close()
        return None
    return source, {s: out.add_stream_from_template(s) for s in source.streams.audio}


def frame_file_names(clip: Clip) -> list[str]:
    """The names output frames get in a folder: the source folder's own (as .png), or numbered."""
    return [f"{name}.png" for name in clip.names]


def is_frame_folder_output(path: str | os.PathLike) -> bool:
    """An output meant as a folder of frames: written with a trailing slash, an existing folder, or no extension."""
    text = os.fspath(path)
    return text.endswith(("/", os.sep)) or Path(text).is_dir() or not Path(text).suffix


def check_clip_output(path: Path) -> None:
    """The output is a video file or a folder of frames (ImageError otherwise)."""
    if not is_frame_folder_output(path) and not is_video_path(path):
        suffix = path.suffix.lower()
        what = "a picture" if suffix in IMAGE_SUFFIXES else f"{suffix!r}"
        raise ImageError(f"{path}: a clip is written as a video ({', '.join(sorted(VIDEO_SUFFIXES))}) or a folder "
                         f"of frames (DIR/), not {what}")
