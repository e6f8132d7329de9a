import pytest
import torch

from optimswap.features import LAYER_STRIDE, load_encoder
from optimswap.features.vgg import HED_MEAN_BGR


def test_hed_vgg16_loads_and_has_expected_layers():
    enc = load_encoder("vgg16-hed")
    x = torch.rand(1, 3, 64, 64)
    feats = enc(x, ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2"])
    for name, f in feats.items():
        assert f.shape[-1] == 64 // LAYER_STRIDE[name]
        assert (f >= 0).all() and f.abs().sum() > 0
    assert enc.convs[0].weight.shape == (64, 3, 3, 3)


def test_caffe_preprocessing_maps_the_mean_colour_to_zero():
    enc = load_encoder("vgg16-hed")
    bgr = torch.tensor(HED_MEAN_BGR) / 255.0
    image = bgr.flip(0).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert enc.normalise(image).abs().max() < 1e-4


def test_encoder_errors():
    enc = load_encoder("vgg16-hed")
    with pytest.raises(ValueError):
        enc(torch.rand(1, 1, 16, 16), ["relu1_1"])
    with pytest.raises(ValueError):
        enc(torch.rand(1, 3, 16, 16), ["relu9_9"])
    with pytest.raises(ValueError):
        load_encoder("resnet")
