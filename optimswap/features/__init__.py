"""Feature encoders for the losses."""

from optimswap.features.vgg import LAYER_STRIDE, VGGEncoder, load_encoder

__all__ = ["LAYER_STRIDE", "VGGEncoder", "load_encoder"]
