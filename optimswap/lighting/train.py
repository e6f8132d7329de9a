"""Train the lighting network on synthetic relit pairs (``optimswap train-lighting``).

Pairs, half of each kind, made by ``relight`` from aligned face photos:
* "same lighting": two different photos (other person, or same person) or two shifts of one photo, under the
  same light direction and ambient;
* "different lighting": two shifts of one photo under lights whose shadings differ by at least
  ``min_change`` (``relight.lighting_change``).
Every image also gets its own random intensity and colour cast (exposure and white balance are not what
the network should call lighting), a random similarity jitter of the aligned frame and a random mirror.

Photos are split by person: the held-out people are never seen in training. The photos are read from the
faces folder at training time only; the weights and a JSON report (split, settings, accuracy, confusion
matrix) are what is kept.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from optimswap.face import find_face, frame_matrix
from optimswap.io import ImageError, list_images, read_image, to_tensor
from optimswap.io.image import json_file, write_files
from optimswap.lighting.net import WEIGHTS, LightingNet
from optimswap.lighting.relight import FaceGeometry, lighting_change, random_light, relight

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    train_sets: tuple[str, ...] = ("identities/angelina", "identities/jennifer", "identities/mark",
                                   "makeup/plain", "makeup/makeup")
    test_sets: tuple[str, ...] = ("identities/deepface_id29", "identities/tony_blair")
    # fitted at this size, then resized to the network's 64 px (as a swap frame is) for relighting
    frame_size: int = 128
    jitters: int = 4  # aligned frames per photo: the exact one plus random similarity jitters
    min_change: float = 0.1  # mean |log shading ratio| over the skin that counts as different lighting
    steps: int = 2000
    batch: int = 64  # pairs per step
    lr: float = 2e-3
    test_pairs: int = 2000
    seed: int = 0


def _jitter(rng: np.random.Generator, size: int) -> np.ndarray:
    """3x3 random similarity about the frame centre: ~4 % scale, ~3 degrees, ~3 % of the side shift."""
    s, a = math.exp(rng.normal(0, 0.04)), math.radians(rng.normal(0, 3))
    c = size / 2
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    shift = rng.normal(0, 0.03 * size, 2)
    m = np.eye(3)
    m[:2, :2], m[:2, 2] = rot, c - rot @ [c, c] + shift
    return m


def load_faces(root: Path, folders: tuple[str, ...], cfg: TrainConfig, rng: np.random.Generator):
    """Every photo's aligned frames (exact, jittered, each also mirrored) with their geometry at the network's
    input size. Returns (geometry of all frames, photo index per frame)."""
    parts, photo_ids, photo = [], [], 0
    for folder in folders:
        for path in list_images(root / folder):
            try:
                image = read_image(path)
                face = find_face(image, name=str(path))
            except ImageError as err:
                log.warning("skipping %s", err)
                continue
            tensor = to_tensor(image)
            base = np.vstack([frame_matrix(face.landmarks, cfg.frame_size), [0, 0, 1]])
            for j in range(cfg.jitters):
                matrix = (base if j == 0 else _jitter(rng, cfg.frame_size) @ base)[:2]
                geometry = FaceGeometry.from_photo(tensor, face.landmarks, cfg.frame_size, matrix)
                geometry = geometry.resized(LightingNet.input_size)
                parts += [geometry, geometry.flip()]
                photo_ids += [photo, photo]
            photo += 1
    if not parts:
        raise ImageError(f"no usable face photo in {folders} under {root}")
    return FaceGeometry.cat(parts), np.array(photo_ids)


def _lights(rng: np.random.Generator, n: int) -> torch.Tensor:
    return torch.stack([random_light(rng).as_tensor() for _ in range(n)])


def _recast(lights: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Same direction and ambient, fresh intensity and colour."""
    return torch.cat([lights[:, :4], _lights(rng, len(lights))[:, 4:]], 1)


def sample_pairs(faces: FaceGeometry, photo_ids: np.ndarray, n: int, cfg: TrainConfig, rng: np.random.Generator):
    """``n`` pairs (images a, images b, label 1 = different lighting), half of each label."""
    n_same = n // 2
    n_diff = n - n_same
    frames = len(photo_ids)
    # Same lighting: a quarter are shifts of one photo, the rest two different photos.
    a_same = rng.integers(frames, size=n_same)
    b_same = np.empty(n_same, dtype=int)
    for k, i in enumerate(a_same):
        one_photo = rng.random() < 0.25
        pool = np.flatnonzero((photo_ids == photo_ids[i]) == one_photo)
        b_same[k] = rng.choice(pool[pool != i] if one_photo and len(pool) > 1 else pool)
    lights_same = _lights(rng, n_same)
    # Different lighting: two shifts of one photo; the second light is redrawn until it shades the face
    # differently enough.
    a_diff = rng.integers(frames, size=n_diff)
    b_diff = np.array([rng.choice(np.flatnonzero(photo_ids == photo_ids[i])) for i in a_diff])
    lights_a = _lights(rng, n_diff)
    lights_b = _lights(rng, n_diff)
    geometry = faces[torch.as_tensor(a_diff)]
    for _ in range(100):
        weak = lighting_change(geometry, lights_a, lights_b) < cfg.min_change
        if not weak.any():
            break
        lights_b[weak] = _lights(rng, int(weak.sum()))
    a_idx = torch.as_tensor(np.concatenate([a_same, a_diff]))
    b_idx = torch.as_tensor(np.concatenate([b_same, b_diff]))
    la = torch.cat([lights_same, lights_a])
    lb = torch.cat([_recast(lights_same, rng), _recast(lights_b, rng)])
    labels = torch.cat([torch.zeros(n_same), torch.ones(n_diff)])
    return relight(faces[a_idx], _recast(la, rng)), relight(faces[b_idx], lb), labels


def evaluate(net: LightingNet, pairs) -> dict:
    """Accuracy and confusion matrix (rows: true same / different; columns: predicted same / different)."""
    a, b, labels = pairs
    with torch.no_grad():
        predicted = torch.cat([net(a[i:i + 256], b[i:i + 256]) for i in range(0, len(a), 256)]) > 0
    truth = labels.bool()
    confusion = [[int((~truth & ~predicted).sum()), int((~truth & predicted).sum())],
                 [int((truth & ~predicted).sum()), int((truth & predicted).sum())]]
    return {"accuracy": float((predicted == truth).float().mean()), "confusion": confusion, "pairs": len(labels)}


def train(root: Path, cfg: TrainConfig, out: Path = WEIGHTS, progress: bool = True) -> dict:
    """Train from ``cfg.seed``, write the weights (fp16) and ``out.with_suffix('.json')``; return the report.
    Deterministic algorithms are switched on meanwhile: without them the convolution gradients differ in the
    last bits from run to run."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        return _train(root, cfg, out, progress)
    finally:
        torch.use_deterministic_algorithms(was_deterministic)


def _train(root: Path, cfg: TrainConfig, out: Path, progress: bool) -> dict:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    train_faces, train_photos = load_faces(root, cfg.train_sets, cfg, rng)
    test_faces, test_photos = load_faces(root, cfg.test_sets, cfg, rng)
    net = LightingNet()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps)
    bar = tqdm(range(cfg.steps), desc="lighting net", disable=not progress)
    for _ in bar:
        a, b, labels = sample_pairs(train_faces, train_photos, cfg.batch, cfg, rng)
        loss = F.binary_cross_entropy_with_logits(net(a, b), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    # Evaluate what is shipped: the fp16-rounded weights.
    shipped = {k: v.half() for k, v in net.state_dict().items()}
    net.load_state_dict({k: v.float() for k, v in shipped.items()})
    net.eval()
    eval_rng = np.random.default_rng(cfg.seed + 1)
    report = {
        "config": asdict(cfg),
        "photos": {"train": int(train_photos.max() + 1), "test": int(test_photos.max() + 1)},
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_pairs_fresh": evaluate(net, sample_pairs(train_faces, train_photos, cfg.test_pairs, cfg, eval_rng)),
        "held_out_people": evaluate(net, sample_pairs(test_faces, test_photos, cfg.test_pairs, cfg, eval_rng)),
    }
    write_files([json_file(out.with_suffix(".json"), report),
                 (out, lambda tmp: torch.save(shipped, tmp))])  # report first, like a run's record
    return report
