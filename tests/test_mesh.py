import sys

import numpy as np
import pytest

from optimswap.errors import BackendUnavailable
from optimswap.face import detect, detect_faces, find_face, interocular
from optimswap.face.align import LEFT_EYE, MOUTH, RIGHT_EYE
from optimswap.face.mesh import FACE_OVAL, IBUG_WEIGHTS, N_POINTS, ibug68
from optimswap.io import read_image

PHOTOS = ["jennifer/01", "mark/01", "tony_blair/01"]


@pytest.mark.parametrize("name", PHOTOS)
def test_mediapipe_68_points_agree_with_dlib(faces, name):
    photo = read_image(faces / "identities" / f"{name}.jpg")
    reference = find_face(photo).landmarks
    face = find_face(photo, backend="mediapipe")
    error = np.linalg.norm(face.landmarks - reference, axis=1) / interocular(reference)
    # Measured on all 45 identity/makeup photos: mean 0.033, worst photo 0.052; these three 0.032-0.038.
    assert error.mean() < 0.06
    sharp = np.r_[LEFT_EYE, RIGHT_EYE, MOUTH]
    assert error[sharp].mean() < 0.045  # measured <= 0.032 on these three


def test_mediapipe_face_carries_the_mesh(jennifer):
    face = find_face(jennifer, backend="mediapipe")
    assert face.landmarks.shape == (68, 2) and face.dense.shape == (N_POINTS, 3)
    x0, y0, x1, y1 = face.box
    xy = face.dense[:, :2]
    assert np.allclose(xy.min(0), (x0, y0)) and np.allclose(xy.max(0), (x1, y1))
    assert np.allclose(face.landmarks, ibug68(face.dense))
    assert find_face(jennifer).dense is None  # dlib faces have no mesh


def test_mediapipe_several_faces_largest_first(jennifer, faces):
    other = read_image(faces / "identities" / "tony_blair" / "01.jpg")
    canvas = np.full((1024, 1100, 3), 200, np.uint8)
    canvas[:, :768] = jennifer
    canvas[300:550, 820:1070] = other
    found = detect_faces(canvas, backend="mediapipe")
    assert len(found) == 2
    assert found[0].area > found[1].area and found[0].box[0] < 768 <= found[1].box[0]
    assert detect_faces(np.full((200, 200, 3), 127, np.uint8), backend="mediapipe") == []


def test_ibug_table_is_a_partition_of_unity_on_the_mesh():
    assert IBUG_WEIGHTS.shape == (68, N_POINTS) and np.allclose(IBUG_WEIGHTS.sum(1), 1) and (IBUG_WEIGHTS >= 0).all()
    assert set(np.nonzero(IBUG_WEIGHTS[:17])[1]) <= set(FACE_OVAL)  # the jaw lies on the face oval
    with pytest.raises(ValueError, match="478"):
        ibug68(np.zeros((468, 3)))


def test_missing_mediapipe_is_backend_unavailable(monkeypatch, jennifer):
    monkeypatch.setitem(sys.modules, "mediapipe", None)  # makes "import mediapipe" raise ImportError
    detect._face_mesh.cache_clear()
    with pytest.raises(BackendUnavailable, match="pip install mediapipe"):
        detect_faces(jennifer, backend="mediapipe")
