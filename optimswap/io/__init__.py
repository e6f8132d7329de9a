"""Reading and writing photos and records."""

from optimswap.io.image import (
    IMAGE_SUFFIXES,
    ImageError,
    list_images,
    read_image,
    to_numpy,
    to_tensor,
    write_image,
    write_json,
)

__all__ = ["IMAGE_SUFFIXES", "ImageError", "list_images", "read_image", "to_numpy", "to_tensor", "write_image",
           "write_json"]
