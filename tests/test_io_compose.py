import numpy as np
import pytest
import torch
from PIL import Image

from optimswap.compose import gaussian_blur, laplacian_blend, match_color, with_coarse_color
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


def test_match_color_without_spread_shifts_the_means_and_keeps_the_contrast():
    from kornia.color import rgb_to_lab

    g = torch.Generator().manual_seed(3)
    image = 0.2 + torch.rand(1, 3, 32, 32, generator=g) * 0.3
    ref = 0.4 + torch.rand(1, 3, 32, 32, generator=g) * 0.5
    mask = torch.ones(1, 1, 32, 32)
    out, lab, ref_lab = (rgb_to_lab(x) for x in (match_color(image, ref, mask, mask, spread=False), image, ref))
    assert torch.allclose(out.mean((2, 3)), ref_lab.mean((2, 3)), atol=0.5)
    assert torch.allclose(out.std((2, 3)), lab.std((2, 3)), rtol=0.05)
    assert not torch.allclose(lab.std((2, 3)), ref_lab.std((2, 3)), rtol=0.2)


def test_coarse_color_with_lightness_takes_the_base_lightness_and_keeps_fine_detail():
    """A planted highlight (coarse, in L) on an image with fine lightness speckle: with ``lightness`` the highlight
    is gone inside the region and the speckle stays; without it the highlight stays."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    g = torch.Generator().manual_seed(4)
    size = 96
    base_lab = torch.zeros(1, 3, size, size)
    base_lab[:, 0], base_lab[:, 1], base_lab[:, 2] = 55.0, 15.0, 20.0
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    highlight = 30.0 * torch.exp(-((ys - 48.0) ** 2 + (xs - 44.0) ** 2) / (2 * 8.0**2))
    speckle = torch.randn(1, size, size, generator=g) * 3.0
    image_lab = base_lab.clone()
    image_lab[:, 0] += highlight + speckle
    base, image = lab_to_rgb(base_lab), lab_to_rgb(image_lab)
    region = torch.zeros(1, 1, size, size)
    region[..., 16:80, 12:76] = 1.0
    inner = (slice(None), slice(None), slice(30, 66), slice(26, 62))
    kept_lab = rgb_to_lab(with_coarse_color(image, base, 2.0, region))
    assert (gaussian_blur(kept_lab[:, :1], 2.0) - 55.0)[inner].max() > 25  # chroma only: the highlight stays
    out_lab = rgb_to_lab(with_coarse_color(image, base, 2.0, region, lightness=True))
    coarse = gaussian_blur(out_lab[:, :1], 2.0)
    assert (coarse - 55.0)[inner].abs().max() < 2.5  # the highlight peaked at 30
    fine, image_l = out_lab[:, :1] - coarse, rgb_to_lab(image)[:, :1]
    expected = image_l - gaussian_blur(image_l, 2.0)
    assert torch.corrcoef(torch.stack([fine[inner].flatten(), expected[inner].flatten()]))[0, 1] > 0.95


def test_coarse_color_takes_the_base_colour_and_keeps_lightness_and_fine_detail():
    """A planted colour blotch (coarse) on an image with fine colour speckle: inside the region the blotch is gone
    (coarse chroma = the base's), the speckle and the lightness stay; outside the region nothing changes."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    g = torch.Generator().manual_seed(2)
    size = 96
    base_lab = torch.zeros(1, 3, size, size)
    base_lab[:, 0], base_lab[:, 1], base_lab[:, 2] = 60.0, 15.0, 20.0  # skin-like
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blotch = 25.0 * torch.exp(-((ys - 48.0) ** 2 + (xs - 44.0) ** 2) / (2 * 8.0**2))  # magenta, ~8 px wide
    speckle = torch.randn(1, 2, size, size, generator=g) * 3.0
    image_lab = base_lab.clone()
    image_lab[:, 0] += torch.randn(1, size, size, generator=g) * 2.0
    image_lab[:, 1] += blotch + speckle[:, 0]
    image_lab[:, 2] += -0.5 * blotch + speckle[:, 1]
    base, image = lab_to_rgb(base_lab), lab_to_rgb(image_lab)
    region = torch.zeros(1, 1, size, size)
    region[..., 16:80, 12:76] = 1.0
    out = with_coarse_color(image, base, 2.0, region)
    out_lab = rgb_to_lab(out)
    inner = (slice(None), slice(None), slice(30, 66), slice(26, 62))
    coarse_out, coarse_base = gaussian_blur(out_lab[:, 1:], 2.0), gaussian_blur(base_lab[:, 1:], 2.0)
    assert (coarse_out - coarse_base)[inner].abs().max() < 1.5  # the blotch peaked at 25
    assert (gaussian_blur(image_lab[:, 1:], 2.0) - coarse_base)[inner].abs().max() > 20
    fine = out_lab[:, 1:] - coarse_out
    expected_fine = speckle - gaussian_blur(speckle, 2.0)
    assert torch.corrcoef(torch.stack([fine[inner].flatten(), expected_fine[inner].flatten()]))[0, 1] > 0.95
    assert (out_lab[:, :1] - image_lab[:, :1])[inner].abs().max() < 0.5  # lightness kept
    outside = region[0, 0] == 0
    assert torch.equal(out[..., outside], image[..., outside])
    with pytest.raises(ValueError, match="same"):
        with_coarse_color(image, base[..., :50], 2.0, region)


def grey_levels(photo: np.ndarray) -> np.ndarray:
    """PIL's 'L' weights (ITU-R 601) on the RGB photo, as exact floats in [0, 255]."""
    return photo.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def write_png_rgb48(path, image: np.ndarray) -> None:
    """A 16-bit-per-channel RGB PNG written by hand (PIL cannot write one)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = image.shape
    rows = b"".join(b"\0" + row.astype(">u2").tobytes() for row in image)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_deep_greyscale_reads_as_the_8_bit_grey(jennifer, tmp_path):
    """16-bit (PNG, big-endian TIFF), 32-bit integer and float greyscale decode to the 8-bit grey of the same
    photo within a level (not clipped to white), and the face is still found."""
    from optimswap.face import find_face

    levels = grey_levels(jennifer)
    as_16 = np.round(levels * 257).astype(np.uint16)
    files = {"I;16": ("g16.png", as_16), "I;16B": ("g16b.tif", as_16.astype(">u2")),
             "I": ("g32.tif", as_16.astype(np.int32)), "F": ("gf.tif", (levels / 255).astype(np.float32))}
    for mode, (name, values) in files.items():
        Image.fromarray(values).save(tmp_path / name)
        with Image.open(tmp_path / name) as im:
            assert im.mode == mode
        image = read_image(tmp_path / name)
        assert image.shape == jennifer.shape and (image[..., 0] == image[..., 2]).all(), mode
        assert np.abs(image[..., 0] - levels).max() <= 1, mode
    assert len(find_face(read_image(tmp_path / "g16.png")).landmarks) == 68


@pytest.mark.parametrize("values, expected", [
    (np.array([[0, 100, 255]], np.int32), [0, 100, 255]),  # 8-bit values stored as 32-bit
    (np.array([[-10, 0, 10]], np.int32), [0, 128, 255]),  # out of any pixel range: stretched
    (np.array([[0, 70000, 140000]], np.int32), [0, 128, 255]),
    (np.array([[0.0, 128.0, 255.0]], np.float32), [0, 128, 255]),  # floats on the 8-bit scale
    (np.array([[0.0, np.nan, 1.0]], np.float32), [0, 0, 255]),  # fractions; NaN as black
])
def test_integer_and_float_greyscale_read_by_their_range(tmp_path, values, expected):
    Image.fromarray(values).save(tmp_path / "g.tif")
    assert read_image(tmp_path / "g.tif")[0, :, 0].tolist() == expected


def test_48_bit_rgb_palette_and_alpha_images_read_as_rgb(jennifer, tmp_path):
    small = jennifer[::8, ::8]
    write_png_rgb48(tmp_path / "rgb48.png", small.astype(np.uint16) * 257)
    assert np.array_equal(read_image(tmp_path / "rgb48.png"), small)
    rgba = np.dstack([small, np.full(small.shape[:2], 90, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    Image.fromarray(rgba).convert("LA").save(tmp_path / "la.png")
    palette = Image.fromarray(small).quantize(64)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "palette.png", transparency=0)
    assert np.array_equal(read_image(tmp_path / "rgba.png"), small)  # colour kept, alpha dropped
    assert np.abs(read_image(tmp_path / "la.png")[..., 0] - grey_levels(small)).max() <= 1
    with Image.open(tmp_path / "palette.png") as im:
        assert im.mode == "P" and "transparency" in im.info
    assert np.abs(read_image(tmp_path / "palette.png").astype(int) - small).mean() < 8


def test_to_tensor_takes_a_read_only_array_without_a_warning_and_leaves_it_as_it_was():
    """A decoded video frame may be read-only: torch warns on such an array, so to_tensor copies it first."""
    import warnings

    from optimswap.io import to_tensor

    frame = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    frame.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tensor = to_tensor(frame)
    assert torch.equal(tensor[0].permute(1, 2, 0), torch.from_numpy(frame.copy()).float() / 255)
    assert not frame.flags.writeable
