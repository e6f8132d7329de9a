from optimswap.io.image import ImageError, read_image, write_image, write_json, to_tensor, to_numpy

__all__ = ["ImageError", "read_image", "write_image", "write_json", "to_tensor", "to_numpy"]
