from fractions import Fraction
from types import SimpleNamespace

import av
import cv2
import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from optimswap.edits.swap import SWAP
from optimswap.errors import OptionError
from optimswap.eval.video import evaluate_clip
from optimswap.io import read_image, to_tensor, write_image
from optimswap.io.video import open_clip, read_frames, write_video
from optimswap.pipeline import Frame
from optimswap.video import (
    VideoConfig,
    cache_path,
    run_clip,
    smooth_track,
    steadied,
    track_faces,
    unchanged_weight,
)

TINY = dict(size=64, levels=1, iters=4, n_targets=2, landmark_tolerance=0.0, keep_occluders=False)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1],
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.fixture(scope="module")
def small_face(faces) -> np.ndarray:
    """jennifer/01 at 200 px wide: eyes ~45 px apart."""
    photo = read_image(faces / "identities" / "jennifer" / "01.jpg")
    return cv2.resize(photo, (200, round(200 * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_AREA)


def test_video_round_trip_keeps_frame_count_rate_and_sound(tmp_path):
    source = tmp_path / "in.mp4"
    rate = Fraction(30000, 1001)
    with av.open(str(source), "w") as out:  # 10 frames of 64x48 and a second of a 440 Hz tone
        video, sound = out.add_stream("libx264", rate=rate), out.add_stream("aac", rate=16000)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        for i in range(10):
            for packet in video.encode(av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8))):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32)[None] * 0.3
        for k in range(0, 16000, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, k
            for packet in sound.encode(frame):
                out.mux(packet)
        for packet in sound.encode():
            out.mux(packet)
    clip = open_clip(source)
    write_video(tmp_path / "out.mp4", read_frames(clip), clip.fps, source)
    copy = open_clip(tmp_path / "out.mp4")
    assert (copy.frames, copy.fps, copy.width, copy.height, copy.audio) == (10, rate, 64, 48, True)
    grey = [f.mean() for f in read_frames(copy)]
    assert np.allclose(grey, 20 * np.arange(10), atol=2)  # the frames in their order


def test_tracking_smooths_a_moving_face(small_face):
    """A face moved along a slow sub-pixel path: the smoothed landmarks follow the path with less jitter and less
    error than each frame's own."""
    path = [(3 * np.sin(2 * np.pi * t / 20), 2 * np.cos(2 * np.pi * t / 20)) for t in range(10)]
    frames = [shifted(small_face, dx, dy) for dx, dy in path]
    track = track_faces(frames, VideoConfig(landmark_smoothing=0))
    assert track.reasons == [None] * len(frames)
    raw = np.stack(track.landmarks)
    smooth_track(track, 1.0)

    def off_path(landmarks):  # landmarks less the known motion, less their mean: detection error
        still = landmarks - np.asarray(path)[:, None, :]
        return still - still.mean(0)

    raw, smooth = off_path(raw), off_path(np.stack(track.landmarks))
    jitter = [np.abs(np.diff(x, 2, axis=0)).mean() for x in (raw, smooth)]
    error = [np.sqrt((x**2).mean()) for x in (raw, smooth)]
    assert jitter[1] < 0.5 * jitter[0]
    assert error[1] < error[0]


def test_smoothing_follows_a_jerky_movement(small_face):
    """A face moved in steps of 12 px every other frame (a clip with repeated frames): the landmarks smoothed along
    the source's motion stay on the face (a Gaussian over the landmarks themselves falls several pixels behind or
    ahead at every step) and still jitter less than each frame's own."""
    path = [(12.0 * ((t + 1) // 2) - 30, 0.0) for t in range(10)]  # -30 .. +30 px
    frames = [shifted(small_face, dx, dy) for dx, dy in path]
    track = track_faces(frames, VideoConfig(landmark_smoothing=0))
    raw = np.stack(track.landmarks)
    smooth_track(track, 1.0)
    moved = np.asarray(path)[:, None, :]
    still = np.stack(track.landmarks) - moved  # the face's own landmarks, the path taken out
    off_path = np.abs(still - still.mean(0)).max(axis=(1, 2))
    assert off_path.max() < 2.0
    plain = gaussian_filter1d(raw, 1.0, axis=0, mode="nearest") - moved
    assert np.abs(plain - plain.mean(0)).max(axis=(1, 2)).max() > 2 * off_path.max()
    jitter = [np.abs(np.diff(x - moved, axis=0)).mean() for x in (raw, np.stack(track.landmarks))]
    assert jitter[1] < jitter[0]


def test_a_planted_cut_is_detected(small_face, faces):
    other = read_image(faces / "identities" / "mark" / "01.jpg")
    other = cv2.resize(other, small_face.shape[1::-1], interpolation=cv2.INTER_AREA)
    frames = [shifted(small_face, t, 0) for t in range(3)] + [shifted(other, t, 0) for t in range(3)]
    track = track_faces(frames, VideoConfig())
    assert track.cuts == [3]
    assert max(d for i, d in enumerate(track.distances) if i != 3) < 0.3 * track.distances[3]


def test_unchanged_weight_lets_go_where_the_source_changed():
    before = torch.rand(1, 3, 32, 32)
    now = before.clone()
    now[..., 8:16, 8:16] += 0.5
    weight = unchanged_weight(now, before, 0.04)
    assert weight[..., 24:, 24:].min() > 0.99 and weight[..., 10:14, 10:14].max() < 0.01


def test_steadied_holds_a_planted_flicker_and_lets_the_source_change_through():
    """A still source whose edited face flickers by +-12 grey levels from frame to frame (a finish step re-decided
    per frame): the delivered face changes by far less; where the source itself changes, the fresh edit comes
    through at once; outside the editable mask nothing changes."""
    rng = np.random.default_rng(0)
    source = np.clip(cv2.GaussianBlur(rng.random((64, 64, 3)).astype(np.float32), (0, 0), 3) * 600 - 170, 0, 255)
    source = source.astype(np.uint8)
    yy, xx = np.mgrid[:64, :64]
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 20**2).astype(np.float32)
    frame = Frame(np.eye(2, 3), to_tensor(source), np.zeros((68, 2)), torch.from_numpy(disc)[None, None])
    video = VideoConfig(steady=0.8)

    def edited(image, offset):
        return np.clip(image + offset * disc[..., None], 0, 255).astype(np.uint8)

    outs, before, previous = [], None, None
    for t in range(8):
        result = SimpleNamespace(image=edited(source, 12 if t % 2 else -12), frame=frame)
        out, before = steadied(result, source, previous, before, video)
        assert np.array_equal(out[disc == 0], source[disc == 0])
        outs.append(out.astype(np.float32))
        previous = source
    inside = disc > 0
    assert np.abs(outs[-1] - outs[-2])[inside].mean() < 0.3 * 24
    moved = source.copy()
    moved[26:38, 26:38] = 255 - moved[26:38, 26:38]  # the source changes in the middle of the face
    fresh = edited(moved, 12)
    out, _ = steadied(SimpleNamespace(image=fresh, frame=frame), moved, source, before, video)
    assert np.abs(out[30:36, 30:36].astype(int) - fresh[30:36, 30:36]).max() <= 2


def test_a_still_clip_gives_still_frames(small_face, faces, tmp_path, one_thread):
    """Three identical frames: the chain (warm start, temporal term, steadied face) delivers nearly the same face
    three times; without the steadied face the warm-started frames drift further from the first."""
    frames, target = tmp_path / "frames", tmp_path / "target"
    frames.mkdir()
    target.mkdir()
    for name in ("01.jpg", "02.jpg"):
        (target / name).write_bytes((faces / "identities" / "angelina" / name).read_bytes())
    for i in range(3):
        write_image(frames / f"f{i}.png", small_face)
    cfg = SWAP.preset("fast", **TINY)
    change = {}
    for name, steady in (("on", 0.8), ("off", 0.0)):
        run_clip("swap", frames, {"target": target}, f"{tmp_path}/{name}/", cfg,
                 VideoConfig(frame_iters=2, steady=steady), progress=False)
        out = [read_image(tmp_path / name / f"f{i}.png").astype(float) for i in range(3)]
        assert not np.array_equal(out[0], small_face)
        change[steady] = max(np.abs(out[i] - out[i - 1]).mean() for i in (1, 2))
    assert change[0.8] < 0.25 and change[0.8] < 0.5 * change[0.0]  # grey levels, mean over the frame


def test_clip_passes_faceless_frames_and_resumes_to_the_same_frames(small_face, faces, tmp_path, one_thread):
    """Four frames, the second without a face: it passes through bit for bit and is counted (and, another picture
    altogether, makes two cuts); a run interrupted before its last frame (warm-started from the third) resumes from
    its cache to the frames of an uninterrupted run."""
    frames, target = tmp_path / "frames", tmp_path / "target"
    frames.mkdir()
    target.mkdir()
    for name in ("01.jpg", "02.jpg"):
        (target / name).write_bytes((faces / "identities" / "angelina" / name).read_bytes())
    blank = np.full_like(small_face, 128)
    for i, image in enumerate([shifted(small_face, i, 0) if i != 1 else blank for i in range(4)]):
        write_image(frames / f"f{i}.png", image)
    cfg, video = SWAP.preset("fast", **TINY), VideoConfig(frame_iters=2)

    whole = run_clip("swap", frames, {"target": target}, f"{tmp_path}/whole/", cfg, video, progress=False)
    assert whole["skipped"] == [{"frame": 1, "reason": "no face"}] and whole["cuts"] == [1, 2]
    assert [r.get("start") for r in whole["frame_rows"]] == ["own", None, "own", "carried"]
    assert np.array_equal(read_image(tmp_path / "whole" / "f1.png"), blank)

    def stop(i):
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_clip("swap", frames, {"target": target}, f"{tmp_path}/resumed/", cfg, video, progress=False, on_frame=stop)
    assert cache_path(tmp_path / "resumed").is_dir() and not (tmp_path / "resumed").exists()
    with pytest.raises(OptionError, match="other inputs or options"):
        run_clip("swap", frames, {"target": target}, f"{tmp_path}/resumed/", cfg, VideoConfig(frame_iters=3),
                 progress=False)
    run_clip("swap", frames, {"target": target}, f"{tmp_path}/resumed/", cfg, video, progress=False)
    for i in range(4):
        assert np.array_equal(*(read_image(tmp_path / run / f"f{i}.png") for run in ("resumed", "whole")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "resumed", "resumed.json", "target", "whole",
                                                          "whole.json"]  # no cache, no temp file left

    with pytest.raises(OptionError, match="exists"):  # nothing replaced without --overwrite
        run_clip("swap", frames, {"target": target}, f"{tmp_path}/whole/", cfg, video, progress=False)

    row = evaluate_clip(tmp_path / "whole.json", whole)
    assert (row["frames"], row["skipped"], row["cuts"], row["passed_exact"]) == (4, 1, 2, "1/1")
    assert row["outside_changed"] == 0
    assert row["flicker"] is not None and row["sampled"] == 3
