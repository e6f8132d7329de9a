"""StyleGAN2 generators: the network, safe checkpoint loading, inversion and latent directions."""

from optimswap.gan.checkpoint import FFHQ_URLS, UnsafeCheckpoint, load_generator
from optimswap.gan.stylegan2 import Architecture, Generator, from_rosinality, from_state_dict, untrained_generator

__all__ = ["FFHQ_URLS", "Architecture", "Generator", "UnsafeCheckpoint", "from_rosinality", "from_state_dict",
           "load_generator", "untrained_generator"]
