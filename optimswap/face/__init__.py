"""Faces: detection and landmarks, the aligned frame and TPS warps, soft masks, identity descriptors."""

from optimswap.face.align import (
    ffhq_quad,
    frame_matrix,
    interocular,
    opening_distance,
    shape_distance,
    tps_warp,
    warp_from_frame,
    warp_to_frame,
)
from optimswap.face.detect import Face, detect_faces, face_at, face_descriptor, find_face
from optimswap.face.mask import face_mask

__all__ = ["Face", "detect_faces", "face_at", "face_descriptor", "face_mask", "ffhq_quad", "find_face",
           "frame_matrix", "interocular", "opening_distance",
           "shape_distance", "tps_warp", "warp_from_frame", "warp_to_frame"]
