import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from kornia.color import rgb_to_lab
from kornia.morphology import dilation

from optimswap.cli import main
from optimswap.edits.makeup import MAKEUP, makeup, region_masks
from optimswap.eval.metrics import spatial_color_distance
from optimswap.eval.report import evaluate_record
from optimswap.face import find_face, frame_matrix, warp_from_frame, warp_to_frame
from optimswap.face.align import apply_matrix
from optimswap.face.mask import polygon_mask
from optimswap.face.regions import brows_mask, eye_shadow_mask, eyes_mask, lips_mask, lower_lid_mask
from optimswap.io import read_image, to_numpy, to_tensor
from optimswap.losses import HistogramLoss, histogram_targets
from optimswap.losses.spatial_color import SpatialColorLoss, lab
from optimswap.runs import run_to_files

TINY = dict(size=64, levels=1, iters=8)


@pytest.fixture(scope="module")
def makeup_dir(faces):
    return faces / "makeup"


def test_histogram_matching_of_a_constructed_distribution_is_exact():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(400, 3, generator=g)
    reference = torch.randn(400, 3, generator=g) * 0.1 + 0.4
    matched = histogram_targets(values, reference)
    assert torch.allclose(matched.sort(0).values, reference.sort(0).values, atol=1e-6)  # same histogram
    assert torch.equal(matched.argsort(0), values.argsort(0))  # order kept: the k-th smallest goes to the k-th
    assert torch.allclose(histogram_targets(values, reference, values, degree=0.0), values, atol=1e-6)
    half = histogram_targets(values, reference, values, degree=0.5)
    assert torch.allclose(half, 0.5 * values + 0.5 * matched, atol=1e-6)
    with pytest.raises(ValueError):
        histogram_targets(values, reference, degree=1.5)


@pytest.mark.parametrize("space", ["rgb", "lab"])
def test_histogram_loss_gradient(space):
    g = torch.Generator().manual_seed(1)
    region = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    region[..., 1:4, 1:4] = 1
    loss = HistogramLoss(region, torch.rand(30, 3, generator=g, dtype=torch.float64), space=space)
    x = (0.1 + 0.8 * torch.rand(1, 3, 5, 5, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(loss, (x,))


@pytest.mark.parametrize("space", ["rgb", "lab"])
def test_histogram_loss_is_zero_when_the_region_has_the_reference_colours(space):
    """Any arrangement of exactly the reference's pixels already has its histogram, in either colour space."""
    g = torch.Generator().manual_seed(2)
    reference = torch.rand(9, 3, generator=g, dtype=torch.float64)
    image = torch.rand(1, 3, 5, 5, generator=g, dtype=torch.float64)
    region = torch.zeros(1, 1, 5, 5, dtype=torch.float64)
    region[..., 1:4, 1:4] = 1
    image[0, :, 1:4, 1:4] = reference[torch.randperm(9, generator=g)].T.reshape(3, 3, 3)
    assert float(HistogramLoss(region, reference, space=space)(image)) < 1e-6
    assert float(HistogramLoss(region, reference.flip(1), space=space)(image)) > 0.01


def _spatial_case(dtype=torch.float64, size=6):
    g = torch.Generator().manual_seed(3)
    region = torch.zeros(1, 1, size, size, dtype=dtype)
    region[..., 1:-1, 1:-1] = 1
    reference, plain = (0.1 + 0.8 * torch.rand(1, 3, size, size, generator=g, dtype=dtype) for _ in range(2))
    return SpatialColorLoss(region, reference, plain, degree=0.7, chroma_sigma=1.0, lightness_sigma=1.5), plain


def test_spatial_color_loss_gradient():
    loss, plain = _spatial_case()
    assert torch.autograd.gradcheck(loss, (plain.clone().requires_grad_(),))


def test_spatial_color_loss_decreases_under_descent_and_is_zero_at_degree_zero():
    loss, plain = _spatial_case(torch.float32, 16)
    image = plain.clone().requires_grad_()
    opt = torch.optim.Adam([image], lr=0.01)
    values = []
    for _ in range(30):
        opt.zero_grad()
        value = loss(image)
        value.backward()
        opt.step()
        values.append(float(value.detach()))
    assert values[-1] < values[15] < values[0] and values[-1] < 0.3 * values[0]
    zero = SpatialColorLoss(loss.weight, plain.flip(1), plain, degree=0.0)
    assert float(zero(plain)) < 1e-6


def test_without_lightness_only_the_chroma_follows_the_reference():
    # A reference lit from the left (a lightness ramp) over an evenly lit plain face: the lightness target stays
    # the plain's, the chroma target is the one that follows the lightness too.
    size = 32
    region = torch.ones(1, 1, size, size)
    ramp = torch.linspace(0.3, 0.9, size).expand(1, 1, size, size)
    reference = torch.cat([ramp, 0.8 * ramp, 0.7 * ramp], 1)
    plain = torch.full((1, 3, size, size), 0.6)
    both = SpatialColorLoss(region, reference, plain, chroma_sigma=1.0, lightness_sigma=1.0)
    chroma = SpatialColorLoss(region, reference, plain, chroma_sigma=1.0, lightness_sigma=1.0, follow_lightness=False)
    assert float(both.target[:, 0].std()) > 0.1  # the ramp is copied
    assert torch.allclose(chroma.target[:, 0], lab(plain)[:, 0])
    assert torch.allclose(chroma.target[:, 1:], both.target[:, 1:])


def test_skin_tone_share_keeps_the_plains_tone_and_follows_the_blush():
    """A reference that is the plain face tanned all over (a uniform colour shift) plus a pink blush on one cheek:
    with mean_share 0 only the blush follows; with 1 the tan follows too."""
    size = 32
    region = torch.ones(1, 1, size, size)
    plain = torch.full((1, 3, size, size), 0.75)
    reference = plain * torch.tensor([0.95, 0.75, 0.6])[None, :, None, None]  # tanned
    cheek = torch.zeros(1, 1, size, size)
    cheek[..., 8:16, 4:12] = 1
    reference = reference + 0.15 * cheek * torch.tensor([0.3, -0.3, -0.1])[None, :, None, None]
    kwargs = dict(chroma_sigma=1.0, lightness_sigma=1.0, follow_lightness=False)
    tone = SpatialColorLoss(region, reference, plain, mean_share=0.0, **kwargs).target - lab(plain)
    full = SpatialColorLoss(region, reference, plain, **kwargs).target - lab(plain)
    far = tone[..., 24:, 20:].norm(dim=1)  # away from the blush: the plain's own colour
    assert float(far.max()) < 0.01 and float(full[..., 24:, 20:].norm(dim=1).min()) > 0.1
    blush = tone[..., 10:14, 6:10] - tone[..., 24:28, 20:24].mean((2, 3), keepdim=True)
    assert float(blush[:, 1].mean()) > 0.05  # redder (a*) on the cheek


def test_darkening_cap_bounds_the_darkening_only_and_leaves_the_chroma():
    """A reference with black smoke on the left half of the region and white on the right: the capped target
    darkens by at most the cap on the left, the uncapped one by more; the lightening on the right (as in makeup
    removal) and the chroma targets are the same."""
    size = 24
    region = torch.ones(1, 1, size, size)
    plain = torch.full((1, 3, size, size), 0.8)
    reference = plain.clone()
    plain[..., :, 12:] = 0.3
    reference[..., :, :12] = torch.tensor([0.15, 0.1, 0.12])[None, :, None, None]
    reference[..., :, 12:] = 0.95
    kwargs = dict(chroma_sigma=0.5, lightness_sigma=0.5, lightness_quantiles=(0.0, 1.0))
    free = SpatialColorLoss(region, reference, plain, **kwargs).target - lab(plain)
    capped = SpatialColorLoss(region, reference, plain, darkening_cap=0.3, **kwargs).target - lab(plain)
    assert float(free[:, 0].min()) < -0.5 and abs(float(capped[:, 0].min()) + 0.3) < 1e-6
    assert float(capped[:, 0].max()) > 0.5 and torch.allclose(free[..., 16:], capped[..., 16:])
    assert torch.allclose(free[:, 1:], capped[:, 1:])


def test_spatial_distance_is_zero_for_identical_images_and_grows_with_colour():
    g = torch.Generator().manual_seed(4)
    image = torch.rand(1, 3, 32, 32, generator=g)
    region = torch.zeros(1, 1, 32, 32)
    region[..., 8:24, 8:24] = 1
    assert spatial_color_distance(image, image.clone(), region) == 0
    shifted = image.clone()
    shifted[:, 0] = (shifted[:, 0] + 0.2).clamp(0, 1)
    assert spatial_color_distance(image, shifted, region) > 3


def test_planted_upper_lid_colour_lands_on_the_upper_lid(makeup_dir):
    """A reference that is the plain photo with purple only on the upper lids: the output gets purple there and
    not under the eyes (a histogram loss, not knowing where, spreads it over the whole eye region)."""
    photo = read_image(makeup_dir / "plain" / "01.jpg")
    face = find_face(photo)
    cfg = MAKEUP.preset(size=128, levels=1, iters=15, lips_weight=0, skin_weight=0)
    matrix = frame_matrix(face.landmarks, cfg.size)
    lm = apply_matrix(matrix, face.landmarks)
    lower = lower_lid_mask(lm, cfg.size)
    upper = eye_shadow_mask(lm, cfg.size) * (1 - lower)
    h, w = photo.shape[:2]
    paint = warp_from_frame(upper, matrix, h, w)
    purple = torch.tensor([0.45, 0.15, 0.5])[None, :, None, None]
    reference = to_numpy(to_tensor(photo) + 0.7 * paint * (purple - to_tensor(photo)))
    out = makeup(photo, reference, cfg, progress=False)
    before, after = (rgb_to_lab(warp_to_frame(to_tensor(x), matrix, cfg.size)) for x in (photo, out.image))
    change = (after - before)[:, 1:].norm(dim=1, keepdim=True)  # chroma change, Delta-E units
    on_lid = float((change * (upper > 0.5)).sum() / (upper > 0.5).sum())
    below = (lower > 0.5) & (eye_shadow_mask(lm, cfg.size) > 0.5)
    under_eye = float((change * below).sum() / below.sum())
    assert on_lid > 8 and under_eye < 0.25 * on_lid, (on_lid, under_eye)


def test_regions_follow_the_landmarks(makeup_dir):
    photo = read_image(makeup_dir / "plain" / "01.jpg")
    face = find_face(photo)
    lm = apply_matrix(frame_matrix(face.landmarks, 128), face.landmarks)
    at = lambda m, p: float(m[0, 0, int(round(p[1])), int(round(p[0]))])
    lips, shadow, eyes = lips_mask(lm, 128), eye_shadow_mask(lm, 128), eyes_mask(lm, 128)
    assert at(lips, (lm[51] + lm[62]) / 2) == 1  # upper lip
    opened = lm.copy()  # open the mouth: lower inner lip and lower outer lip move down by a tenth of the eye distance
    opened[[55, 56, 57, 58, 59, 65, 66, 67]] += [0, 0.1 * np.linalg.norm(lm[45] - lm[36])]
    assert at(lips_mask(opened, 128), opened[60:68].mean(0)) == 0  # the mouth opening is not lip
    assert at(lips_mask(opened, 128), (opened[57] + opened[66]) / 2) == 1  # the lower lip is
    feathered, opening = lips_mask(opened, 128, feather=2.0 / 128), polygon_mask(opened[60:68], 128)
    assert float(feathered[opening > 0].max()) == 0  # feathered outwards only: the teeth never take the lip colour
    below_chin_side = opened[57] + [0, 2]  # two pixels below the outer lower lip: the feather reaches the skin
    assert 0 < at(feathered, below_chin_side) < 1
    assert bool((feathered[lips_mask(opened, 128) > 0] == 1).all())  # the whole lip at full strength
    assert at(shadow, (lm[19] + lm[37]) / 2) > 0.9  # the lid between brow and eye
    assert at(shadow, lm[36:42].mean(0)) < 0.15 and at(shadow, lm[19]) < 0.15  # not the eye, not the brow
    inside_eye = ((shadow > 0.5) & (eyes > 0)).sum() / (eyes > 0).sum()  # the region used for the histogram
    assert inside_eye < 0.25
    # Below the eye the region fades out, no edge: falling steadily from the lower lid to 0 a fifth of the eye
    # distance below it.
    eye_distance = np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0))
    below = [at(shadow, (lm[40] + lm[41]) / 2 + [0, f * eye_distance]) for f in (0.05, 0.1, 0.15, 0.2)]
    assert below[0] > 0.6 and all(a > b for a, b in zip(below, below[1:], strict=False)) and below[-1] < 0.1, below


def test_degree_zero_returns_the_input(makeup_dir):
    plain = makeup_dir / "plain" / "02.jpg"
    res = makeup(plain, makeup_dir / "makeup" / "01.jpg", MAKEUP.preset(degree=0.0, **TINY), progress=False)
    assert np.abs(res.image.astype(int) - read_image(plain)).max() <= 1


def test_makeup_moves_lip_colour_to_the_reference_and_keeps_the_rest(makeup_dir, tmp_path, device):
    """Scored by ``optimswap eval``'s makeup metrics from the run record."""
    out = tmp_path / "m.png"
    run_to_files("makeup", makeup_dir / "plain" / "01.jpg", {"reference": makeup_dir / "makeup" / "01.jpg"}, out,
                 MAKEUP.preset(**TINY, device=str(device)), progress=False)
    row = evaluate_record(out.with_suffix(".json"))
    assert row["edit"] == "makeup" and not row["error"]
    assert row["lips_after"] < 0.7 * row["lips_before"]
    assert row["psnr_outside"] == float("inf")  # bit-exact outside the makeup regions
    assert row["id_to_source"] < 0.35


def test_cli_makeup_writes_result_and_record(tmp_path, makeup_dir):
    out = tmp_path / "m.png"
    args = ["makeup", str(makeup_dir / "plain" / "03.jpg"), str(makeup_dir / "makeup" / "02.jpg"), "-o", str(out),
            "--size", "64", "--iters", "3", "--degree", "0.5", "--skin-weight", "0", "-q"]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["edit"] == "makeup" and record["options"]["degree"] == 0.5
    assert record["options"]["skin_weight"] == 0 and record["inputs"]["reference"].endswith("02.jpg")
    res = CliRunner().invoke(main, ["eval", str(tmp_path), "-o", str(tmp_path / "eval.csv")], catch_exceptions=False)
    assert res.exit_code == 0 and "lips_after" in res.output and "skin_after" not in res.output, res.output
    assert (tmp_path / "eval.csv").exists()
    res = CliRunner().invoke(main, [*args[:5], "--lips-weight", "-1", "-q"])
    assert res.exit_code != 0 and "lips_weight" in str(res.exception)


def test_a_closed_reference_mouth_lands_lip_for_lip_on_an_open_one(makeup_dir):
    """plain 02 smiles with teeth, makeup 05's lips are closed: the reference's lower lip, painted green, must land on
    the plain's lower lip and not on its upper lip (a thin-plate spline smeared it across the teeth)."""
    from skimage.draw import polygon2mask

    from optimswap.edits.makeup import align_reference
    from optimswap.pipeline import make_frame
    from optimswap.registry import face_region

    plain = read_image(makeup_dir / "plain" / "02.jpg")
    reference = read_image(makeup_dir / "makeup" / "05.jpg").copy()
    ref_face = find_face(reference)
    lower_lip = np.concatenate([ref_face.landmarks[54:60], ref_face.landmarks[[48, 60, 67, 66, 65, 64]]])
    reference[polygon2mask(reference.shape[:2], lower_lip[:, ::-1])] = (0, 255, 0)
    cfg = MAKEUP.preset(size=256)
    frame = make_frame(to_tensor(plain), find_face(plain), cfg, face_region)
    warped, inside = align_reference(reference, ref_face, frame, cfg, "cpu")
    lm = frame.landmarks

    def share_green(points):
        region = torch.as_tensor(polygon2mask((256, 256), points[:, ::-1])) & (inside[0, 0] > 0.5)
        pixels = warped[0][:, region]
        return float(((pixels[1] > 0.8) & (pixels[0] < 0.3)).float().mean())

    assert share_green(np.concatenate([lm[54:60], lm[[48, 60, 67, 66, 65, 64]]])) > 0.8
    assert share_green(np.concatenate([lm[48:55], lm[[64, 63, 62, 61, 60]]])) < 0.15


def test_mesh_regions_lie_near_the_dlib_ones_and_leave_out_the_iris(makeup_dir):
    """``--landmarks mediapipe``: the regions come from the 478-point mesh. Each lies within a small neighbourhood of
    its 68-point counterpart, the eye region leaves the iris (and the eyeball between the lid margins) out, and
    the brows are left out."""
    photo = read_image(makeup_dir / "plain" / "01.jpg")
    mesh_face, dlib_face = find_face(photo, backend="mediapipe"), find_face(photo)
    size = 256
    matrix = frame_matrix(dlib_face.landmarks, size)
    lm, dense = apply_matrix(matrix, dlib_face.landmarks), apply_matrix(matrix, mesh_face.dense[:, :2])
    mesh_lm = apply_matrix(matrix, mesh_face.landmarks)
    cfg = MAKEUP.preset(size=size)
    near = 0.1 * np.linalg.norm(lm[45] - lm[36])  # a tenth of the eye distance
    kernel = torch.ones(2 * round(near) + 1, 2 * round(near) + 1)
    dlib_regions = region_masks(lm, size, cfg, "cpu")
    mesh_regions = region_masks(mesh_lm, size, cfg, "cpu", dense)
    for name, mesh_region in mesh_regions.items():
        neighbourhood = dilation((dlib_regions[name] > 0.05).float(), kernel)
        inside = float(((mesh_region > 0.5) & (neighbourhood > 0)).sum() / (mesh_region > 0.5).sum())
        assert inside > 0.97, (name, inside)
    eyes = mesh_regions["eyes"][0, 0]
    opening = eyes_mask(mesh_lm, size, 0.0, dense=dense)[0, 0] > 0
    for centre, rim in ((468, [469, 470, 471, 472]), (473, [474, 475, 476, 477])):
        radius = np.linalg.norm(dense[rim] - dense[centre], axis=1).mean()
        ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        iris = ((xs - dense[centre, 0]) ** 2 + (ys - dense[centre, 1]) ** 2) <= radius**2
        visible = iris & opening  # below the lids
        assert visible.sum() > 20 and float(eyes[visible].max()) < 0.1
    brows = brows_mask(mesh_lm, size, 0.0, dense=dense)[0, 0] > 0
    assert float(eyes[brows].mean()) < 0.2
    assert float(mesh_regions["skin"][0, 0][brows | opening].max()) < 0.05


def test_a_mediapipe_makeup_run_is_scored_in_its_own_regions(makeup_dir, tmp_path):
    """The edit's mask and eval's come from the same mesh: nothing outside them changes (PSNR inf)."""
    out = tmp_path / "mesh.png"
    cfg = MAKEUP.preset(landmarks="mediapipe", **TINY)
    run_to_files("makeup", makeup_dir / "plain" / "01.jpg", {"reference": makeup_dir / "makeup" / "01.jpg"}, out, cfg,
                 progress=False)
    row = evaluate_record(out.with_suffix(".json"))
    assert row["psnr_outside"] == float("inf")
    assert row["lips_spatial_after"] < row["lips_spatial_before"]
