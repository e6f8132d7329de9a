"""Face detection and 68-point landmarks (iBUG 300-W layout).

Backends: ``dlib`` (offline default: dlib-bin + face_recognition_models' shape predictor), ``fan``
(face-alignment's FAN, which downloads its weights on first use) and ``mediapipe`` (MediaPipe's 478-point face
mesh, offline; the 68 points are derived from it by ``optimswap.face.mesh.ibug68`` and the mesh is kept as ``dense``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimswap.errors import BackendUnavailable, FaceIndexError, NoFaceError, OptionError
from optimswap.face.mesh import ibug68

DETECT_MAX_SIDE = 640  # HOG detection runs on a copy at most this large (speed); landmarks use full resolution


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in photo pixels
    landmarks: np.ndarray  # (68, 2) float64, (x, y) photo pixels
    dense: np.ndarray | None = None  # mediapipe only: (478, 3) mesh, x y photo pixels, z relative depth scaled like x

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])

    def moved(self, dx: float, dy: float) -> Face:
        """The same face with every coordinate moved by (dx, dy) pixels (into a crop of the photo and back)."""
        x0, y0, x1, y1 = self.box
        dense = None if self.dense is None else self.dense + [dx, dy, 0.0]
        return Face((x0 + dx, y0 + dy, x1 + dx, y1 + dy), self.landmarks + [dx, dy], dense)


def face_recognition_models_dir() -> Path:
    """Folder of face_recognition_models' .dat files, found without importing it (its __init__ needs
    pkg_resources, which new setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("face_recognition_models is not installed: pip install face_recognition_models==0.3.0")
    return Path(spec.submodule_search_locations[0]) / "models"


def _import_dlib():
    try:
        import dlib
    except ImportError as err:
        raise BackendUnavailable("dlib is not installed: pip install dlib-bin") from err
    return dlib


@functools.cache
def _dlib_models():
    dlib = _import_dlib()
    predictor = face_recognition_models_dir() / "shape_predictor_68_face_landmarks.dat"
    if not predictor.is_file():
        raise BackendUnavailable(f"missing {predictor}: reinstall face_recognition_models==0.3.0")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(predictor))


def _detect_dlib(image: np.ndarray) -> list[Face]:
    dlib = _import_dlib()
    detector, predictor = _dlib_models()
    scale = min(1.0, DETECT_MAX_SIDE / max(image.shape[:2]))
    small = image if scale == 1.0 else np.asarray(_resize(image, scale))
    # One upsampling finds faces down to ~40 px in the detection copy.
    rects = detector(small, 1)
    faces = []
    for r in rects:
        box = dlib.rectangle(*(int(round(v / scale)) for v in (r.left(), r.top(), r.right(), r.bottom())))
        shape = predictor(image, box)
        pts = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        faces.append(Face((box.left(), box.top(), box.right(), box.bottom()), pts))
    return faces


def _resize(image: np.ndarray, scale: float):
    from PIL import Image

    h, w = image.shape[:2]
    return Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                         Image.Resampling.BILINEAR)


@functools.cache
def _fan_model(device: str):
    try:
        import face_alignment
    except ImportError as err:
        raise BackendUnavailable("the 'fan' landmark backend needs face-alignment: pip install 'optimswap[fan]'",
                                 option="landmarks") from err
    try:
        return face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, device=device)
    except Exception as err:  # URLError/HTTPError offline, or a corrupt cache
        raise BackendUnavailable(
            f"face-alignment could not load its FAN weights ({err}); they are downloaded on first use, "
            "so this backend needs internet once; the dlib backend works offline", option="landmarks"
        ) from err


def _detect_fan(image: np.ndarray, device: str = "cpu") -> list[Face]:
    result = _fan_model(device).get_landmarks_from_image(image, return_bboxes=True)
    if result is None or result[0] is None:
        return []
    landmarks, _, boxes = result
    faces = []
    for lm, b in zip(landmarks, boxes, strict=True):
        x0, y0, x1, y1 = (float(v) for v in b[:4])
        faces.append(Face((x0, y0, x1, y1), np.asarray(lm, dtype=np.float64)))
    return faces


MESH_MAX_FACES = 4


def import_mediapipe():
    try:
        import mediapipe
    except ImportError as err:
        raise BackendUnavailable("the 'mediapipe' backend needs mediapipe: pip install mediapipe==0.10.14",
                                 option="landmarks") from err
    return mediapipe


@functools.cache
def _face_mesh(max_faces: int):
    """MediaPipe's legacy FaceMesh graph (slow to build, so one per face count); its models ship in the wheel."""
    return import_mediapipe().solutions.face_mesh.FaceMesh(
        static_image_mode=True, refine_landmarks=True, max_num_faces=max_faces)


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
    """Standard error (file descriptor 2) to the null device for the block: MediaPipe's C++ (TensorFlow Lite, absl)
    logs there past Python, and its lines would be a run's last words. Shown with --debug (the optimswap logger at
    DEBUG)."""
    if logging.getLogger("optimswap").isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def mediapipe_process(graph: Callable[[], Any], image: np.ndarray) -> Any:
    """``graph().process(image)`` for a legacy MediaPipe solution (``graph`` makes or returns the cached one), its
    native logs hidden, without protobuf's deprecation warning (mediapipe 0.10.14 calls an API that newer protobuf
    flags)."""
    with native_logs_hidden(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
        return graph().process(image)


def _detect_mediapipe(image: np.ndarray, max_faces: int = MESH_MAX_FACES) -> list[Face]:
    result = mediapipe_process(functools.partial(_face_mesh, max_faces), image)
    height, width = image.shape[:2]
    faces = []
    for mesh in result.multi_face_landmarks or []:
        dense = np.array([[p.x * width, p.y * height, p.z * width] for p in mesh.landmark], dtype=np.float64)
        (x0, y0), (x1, y1) = dense[:, :2].min(0), dense[:, :2].max(0)
        faces.append(Face((float(x0), float(y0), float(x1), float(y1)), ibug68(dense), dense))
    return faces


BACKENDS = {"dlib": _detect_dlib, "fan": _detect_fan, "mediapipe": _detect_mediapipe}


def detect_faces(image: np.ndarray, backend: str = "dlib") -> list[Face]:
    """All faces in an RGB uint8 photo, largest first."""
    if backend not in BACKENDS:
        raise OptionError("landmarks", f"unknown landmark backend {backend!r}; choose from {sorted(BACKENDS)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 (H, W, 3) array, got {image.dtype} {image.shape}")
    image = np.ascontiguousarray(image)  # dlib needs C order
    return sorted(BACKENDS[backend](image), key=lambda f: -f.area)


def find_face(image: np.ndarray, backend: str = "dlib", face_index: int = 0, name: str = "photo") -> Face:
    """The face at ``face_index`` (0 = largest), with an error that says what was found otherwise."""
    faces = detect_faces(image, backend)
    if not faces:
        raise NoFaceError(f"{name}: no face found")
    if not 0 <= face_index < len(faces):
        raise FaceIndexError(f"{name}: face index {face_index} requested but {len(faces)} face(s) found")
    return faces[face_index]


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def face_at(image: np.ndarray, box: tuple[float, float, float, float], backend: str = "dlib") -> Face | None:
    """The face in ``image`` overlapping ``box`` (x0, y0, x1, y1) most, if by IoU >= 0.3 (the same face in an edited
    copy of a photo), else None."""
    scored = [(box_iou(f.box, box), f) for f in detect_faces(image, backend)]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] >= 0.3 else None


def face_descriptor(image: np.ndarray, face: Face) -> np.ndarray:
    """dlib's 128-d ResNet face descriptor (face_recognition_models); same person usually < 0.6 apart."""
    dlib = _import_dlib()
    model = _dlib_recognizer()
    box = dlib.rectangle(*(int(round(v)) for v in face.box))
    shape = dlib.full_object_detection(box, [dlib.point(int(round(x)), int(round(y))) for x, y in face.landmarks])
    return np.asarray(model.compute_face_descriptor(np.ascontiguousarray(image), shape), dtype=np.float64)


@functools.cache
def _dlib_recognizer():
    dlib = _import_dlib()
    path = face_recognition_models_dir() / "dlib_face_recognition_resnet_model_v1.dat"
    if not path.is_file():
        raise BackendUnavailable(f"missing {path}: reinstall face_recognition_models==0.3.0")
    return dlib.face_recognition_model_v1(str(path))
