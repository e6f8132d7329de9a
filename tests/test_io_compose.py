import numpy as np
import pytest
import torch

from optimswap.compose import laplacian_blend, match_color
from optimswap.io import ImageError, read_image, write_image
from optimswap.io import image as image_module


def test_read_errors(tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="not a readable image"):
        read_image(bad)
    ok = tmp_path / "ok.png"
    write_image(ok, np.zeros((40, 30, 3), np.uint8))
    assert read_image(ok).shape == (40, 30, 3)
    monkeypatch.setattr(image_module, "MAX_PIXELS", 1000)
    with pytest.raises(ImageError, match="larger than"):
        read_image(ok)


def test_write_is_atomic_and_leaves_no_temp(tmp_path):
    out = tmp_path / "a.png"
    write_image(out, np.full((8, 8, 3), 7, np.uint8))
    assert (read_image(out) == 7).all()
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    with pytest.raises(ImageError):
        write_image(tmp_path / "a.unknown", np.zeros((8, 8, 3), np.uint8))


def test_laplacian_blend_exact_outside_and_inside():
    g = torch.Generator().manual_seed(0)
    fg, bg = torch.rand(1, 3, 67, 90, generator=g), torch.rand(1, 3, 67, 90, generator=g)
    mask = torch.zeros(1, 1, 67, 90)
    mask[..., 20:50, 25:70] = 1.0
    out = laplacian_blend(fg, bg, mask, levels=4)
    assert torch.equal(out[..., mask[0, 0] == 0], bg[..., mask[0, 0] == 0])
    assert (out - fg)[..., 30:40, 40:55].abs().max() < 0.05  # deep inside: the foreground
    assert torch.allclose(laplacian_blend(fg, fg, mask), fg, atol=1e-5)


def test_match_color_matches_masked_statistics():
    from kornia.color import rgb_to_lab

    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 32, 32, generator=g) * 0.5
    ref = 0.3 + torch.rand(1, 3, 32, 32, generator=g) * 0.4
    mask = torch.ones(1, 1, 32, 32)
    out = rgb_to_lab(match_color(image, ref, mask, mask))
    ref_lab = rgb_to_lab(ref)
    assert torch.allclose(out.mean((2, 3)), ref_lab.mean((2, 3)), atol=0.5)
    assert torch.allclose(out.std((2, 3)), ref_lab.std((2, 3)), rtol=0.05)
