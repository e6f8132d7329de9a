import pickle

import h5py
import pytest
import torch

from optimswap.errors import BackendUnavailable, OptionError
from optimswap.features import LAYER_STRIDE, load_encoder
from optimswap.features.vgg import HED_MEAN_BGR, hed_weights_path, vgg19_cache_path


def test_hed_vgg16_first_layer_equals_the_keras_weights_applied_directly():
    """relu1_1 equals a convolution with the .h5 file's first kernel (HWIO) on the Caffe-normalised input."""
    enc = load_encoder("vgg16-hed")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with h5py.File(hed_weights_path(), "r") as h5:
        kernel = torch.from_numpy(h5["block1/layers/conv2d/vars/0"][()]).permute(3, 2, 0, 1)
        bias = torch.from_numpy(h5["block1/layers/conv2d/vars/1"][()])
    caffe = x.flip(1) * 255.0 - torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1)
    expected = torch.relu(torch.nn.functional.conv2d(caffe, kernel, bias, padding=1))
    assert torch.allclose(enc(x, ["relu1_1"])["relu1_1"], expected, rtol=1e-4, atol=1e-3)


def test_deeper_layers_have_their_stride_and_see_the_input():
    enc = load_encoder("vgg16-hed")
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 3, 64, 64, generator=g), torch.rand(1, 3, 64, 64, generator=g)
    fa, fb = enc(a, ["relu3_1", "relu4_2"]), enc(b, ["relu3_1", "relu4_2"])
    for name in fa:
        assert fa[name].shape[-2:] == (64 // LAYER_STRIDE[name],) * 2
        assert (fa[name] - fb[name]).abs().mean() > 1e-3 * fa[name].abs().mean()


def test_caffe_preprocessing_maps_the_mean_colour_to_zero():
    enc = load_encoder("vgg16-hed")
    bgr = torch.tensor(HED_MEAN_BGR) / 255.0
    image = bgr.flip(0).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    assert enc.normalise(image).abs().max() < 1e-4


def test_one_encoder_per_device_and_loading_another_device_leaves_the_first_alone():
    cpu = load_encoder("vgg16-hed", "cpu")
    assert load_encoder("vgg16-hed", torch.device("cpu")) is cpu
    meta = load_encoder("vgg16-hed", "meta")
    assert meta is not cpu and meta.convs[0].weight.device.type == "meta"
    assert cpu.convs[0].weight.device.type == "cpu"


def test_encoder_errors():
    enc = load_encoder("vgg16-hed")
    with pytest.raises(ValueError):
        enc(torch.rand(1, 1, 16, 16), ["relu1_1"])
    with pytest.raises(ValueError):
        enc(torch.rand(1, 3, 16, 16), ["relu9_9"])
    with pytest.raises(OptionError, match="encoder"):
        load_encoder("resnet")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_tampered_cached_vgg19_file_is_refused_without_unpickling(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    marker = tmp_path / "pwned"
    path = vgg19_cache_path()
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps({"features.0.weight": _Exploit(marker)}))
    with pytest.raises(BackendUnavailable, match="SHA-256"):
        load_encoder("vgg19", "cpu")
    assert not marker.exists()
