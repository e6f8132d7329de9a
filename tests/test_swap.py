import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from optimswap.cli import main
from optimswap.edits.swap import SWAP, prepare_targets, swap, swap_objective
from optimswap.eval.report import evaluate_record
from optimswap.face import find_face, frame_matrix, warp_from_frame, warp_to_frame
from optimswap.io import list_images, read_image, to_tensor
from optimswap.optim import LBFGS
from optimswap.pipeline import Level, make_frame
from optimswap.registry import face_region
from optimswap.runs import run_to_files

TINY = dict(size=64, levels=1, iters=6, n_targets=2)


def test_lbfgs_lowers_the_total_loss(jennifer, faces, device):
    cfg = SWAP.preset("fast", **TINY)
    frame = make_frame(to_tensor(jennifer, device), find_face(jennifer), cfg, face_region)
    targets = prepare_targets(list_images(faces / "identities" / "angelina"), frame, cfg, device)
    objective = swap_objective(targets, cfg, device)(Level(64, frame.image, frame.mask, frame.image))
    param = frame.image.clone()
    render = lambda: frame.image + frame.mask * (param - frame.image)
    history = LBFGS(refresh_every=6).run([param], render, objective, iters=12, progress=False)
    first_round = [h["total"] for h in history[: len(history) // 2]]
    assert history[-1]["total"] < 0.8 * history[0]["total"]
    assert min(first_round) < first_round[0]


@pytest.mark.parametrize("content_from", ["source", "start"])
def test_the_content_loss_keeps_the_chosen_image(jennifer, faces, content_from):
    """Content to the start image: zero at the start (the classic swap: the source's pose, the target's face), not at
    the source; and the other way round for content to the source."""
    cfg = SWAP.preset("fast", **TINY, content_from=content_from)
    device = torch.device("cpu")
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    targets = prepare_targets(list_images(faces / "identities" / "angelina"), frame, cfg, device)
    start = torch.flip(frame.image, dims=[-1])  # any image other than the source
    objective = swap_objective(targets, cfg, device)(Level(64, frame.image, frame.mask, start))
    at_source, at_start = (float(objective(x)[1]["content"]) for x in (frame.image, start))
    kept, other = (at_start, at_source) if content_from == "start" else (at_source, at_start)
    assert kept < 1e-6 < other


def test_swap_keeps_background_and_size(jennifer, faces, device):
    cfg = SWAP.preset("fast", **TINY, device=str(device))
    result = swap(faces / "identities" / "jennifer" / "01.jpg", faces / "identities" / "angelina", cfg, progress=False)
    assert result.image.shape == jennifer.shape
    assert len(result.targets.used) == 2
    # Everything outside the warped-back mask's support is the input, bit for bit.
    h, w = jennifer.shape[:2]
    support = warp_from_frame(result.frame.mask, result.frame.matrix, h, w)[0, 0].cpu().numpy() > 0
    assert np.array_equal(result.image[~support], jennifer[~support])
    assert np.abs(result.image[support].astype(int) - jennifer[support]).mean() > 0.5  # the face did change


def test_swap_moves_identity_towards_target(faces, tmp_path):
    """jennifer/01 -> angelina at the calibration setting (128 px): closer to angelina, pose and background kept."""
    out = tmp_path / "swap.png"
    record = run_to_files("swap", faces / "identities" / "jennifer" / "01.jpg",
                          {"target": faces / "identities" / "angelina"}, out, SWAP.preset("fast"), progress=False)
    row = evaluate_record(out.with_suffix(".json"))
    assert row["error"] == "" and record["evaluations"] > 0
    assert row["id_drop"] > 0.08
    assert row["nme"] < 0.05
    assert row["psnr_outside"] == float("inf")


def test_cli_swap_writes_outputs_and_protects_inputs(tmp_path, faces):
    src = faces / "identities" / "tony_blair" / "01.jpg"
    tdir = faces / "identities" / "mark"
    out = tmp_path / "out.png"
    args = ["swap", str(src), str(tdir), "-o", str(out), "--size", "64", "--levels", "1", "--iters", "3",
            "--n-targets", "1", "-q"]
    runner = CliRunner()
    res = runner.invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert read_image(out).shape == read_image(src).shape
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["options"]["size"] == 64 and len(record["targets_used"]) == 1 and record["loss_history"]
    # Existing output is not replaced without --overwrite; an input never is.
    res = runner.invoke(main, args)
    assert res.exit_code != 0 and "exists" in str(res.exception)
    res = runner.invoke(main, [*args[:3], "-o", str(src), *args[5:]])
    assert res.exit_code != 0 and "input" in str(res.exception)


def test_bad_inputs_are_clear_errors(tmp_path, faces):
    from optimswap.errors import ImageError, OptionError
    from optimswap.io import write_image

    blank = tmp_path / "blank.png"
    write_image(blank, np.full((120, 120, 3), 90, np.uint8))
    with pytest.raises(ImageError, match="no face"):
        swap(blank, faces / "identities" / "mark", SWAP.preset("fast", **TINY), progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageError, match="no photos"):
        swap(faces / "identities" / "mark" / "01.jpg", empty, SWAP.preset("fast", **TINY), progress=False)
    with pytest.raises(OptionError, match="size"):
        SWAP.preset("fast", size=90)  # not divisible by 2**levels
    with pytest.raises(OptionError, match="preset"):
        SWAP.preset("nope")


def test_swap_is_reproducible_from_the_seed(faces):
    """Two swaps with one seed give the same pixels (target re-shading included, whose lighting fit once differed
    in the last bits between identical calls)."""
    cfg = SWAP.preset("fast", size=64, levels=1, iters=8, n_targets=3)
    source, target = faces / "identities" / "deepface_id29" / "02.jpg", faces / "identities" / "jennifer"
    first, second = (swap(source, target, cfg, progress=False).image for _ in range(2))
    assert np.array_equal(first, second)


def _with_bar(photo: np.ndarray, face) -> np.ndarray:
    """A textured bar (red/blue stripes) across the left cheek, from the jaw line to near the nose wing (the
    nostrils themselves are the face's own dark features, which the occlusion mask never flags)."""
    barred = photo.copy()
    lm = face.landmarks
    y0, y1 = int(lm[29, 1]), int(lm[33, 1])
    x0, x1 = int(lm[2, 0]), int(lm[31, 0] - 0.15 * np.linalg.norm(lm[45] - lm[36]))
    stripes = (np.arange(x1 - x0) // 4 % 2)[None, :, None]
    barred[y0:y1, x0:x1] = np.where(stripes, [200, 30, 40], [30, 40, 200]).astype(np.uint8)
    return barred, (slice(y0, y1), slice(x0, x1))


def test_an_occluder_over_the_face_stays_while_the_rest_is_swapped(faces):
    photo = read_image(faces / "identities" / "mark" / "01.jpg")
    barred, bar = _with_bar(photo, find_face(photo))
    result = swap(barred, faces / "identities" / "angelina", SWAP.preset(**TINY), progress=False)
    assert np.array_equal(result.image[bar], barred[bar])  # the occluder is untouched, bit for bit
    face = find_face(photo)
    eyes = (slice(int(face.landmarks[37:42, 1].min()) - 5, int(face.landmarks[37:42, 1].max()) + 5),
            slice(int(face.landmarks[36, 0]), int(face.landmarks[47, 0])))
    assert np.abs(result.image[eyes].astype(int) - barred[eyes]).mean() > 3  # the eyes were swapped
    assert result.record["kept_share_of_face"] > 0.05


def test_an_open_mouth_keeps_its_inside_and_a_closed_one_keeps_nothing():
    from optimswap.edits.swap import mouth_opening

    lm = np.zeros((68, 2))
    lm[36:48] = [(20, 20)] * 6 + [(80, 20)] * 6  # eye centres 60 px apart
    lm[60:68] = [(40, 50), (45, 47), (50, 46), (55, 47), (60, 50), (55, 56), (50, 57), (45, 56)]
    opening = mouth_opening(lm, (100, 100))
    assert opening[51, 50] and not opening[40, 50] and not opening[51, 30]
    lm[65:68] = lm[[63, 62, 61]]  # the lower inner lip on the upper one: a closed mouth
    assert not mouth_opening(lm, (100, 100)).any()


def test_the_classic_method_is_the_classic_swap_run_through_the_pipeline(faces, jennifer):
    from optimswap.compose.classic import classic_swap

    result = swap(jennifer, faces / "identities" / "angelina", SWAP.preset(method="classic", size=64),
                  progress=False)
    assert result.history == []  # nothing optimized
    best = result.targets.used[0]["path"]
    target = read_image(best)
    direct, _ = classic_swap(jennifer, find_face(jennifer).landmarks, [target], [find_face(target).landmarks])
    # The pipeline's multi-band blend under the soft face mask's rim leaves a level or two near the jaw line.
    difference = np.abs(result.image.astype(int) - direct)
    assert difference.max() <= 3 and (difference > 1).mean() < 1e-3


def test_source_texture_replaces_the_fine_band_on_the_skin_only(jennifer):
    from optimswap.edits.swap import with_source_texture

    cfg = SWAP.preset(size=64)
    face = find_face(jennifer)
    frame = make_frame(to_tensor(jennifer), face, cfg, face_region)
    flat = torch.full_like(to_tensor(jennifer), 0.5)
    textured = with_source_texture(flat, to_tensor(jennifer), frame, cfg)
    lm = face.landmarks
    cheek = (int((lm[2, 1] + lm[31, 1]) / 2), int((lm[2, 0] + lm[31, 0]) / 2))
    patch = textured[0, :, cheek[0] - 10:cheek[0] + 10, cheek[1] - 10:cheek[1] + 10]
    assert patch.std() > 0.005  # the flat start got the source's skin texture
    corner = textured[0, :, :50, :50]
    assert torch.equal(corner, flat[0, :, :50, :50])  # far from the face: unchanged


def test_the_source_forehead_takes_out_a_planted_highlight_and_leaves_the_brows_and_below(jennifer):
    """A white highlight planted mid-forehead (as the target photos' highlights came through) is flattened to the
    source's lighting where the forehead ramp is full; below the brows nothing changes, bit for bit."""
    from optimswap.edits.swap import _pixels_per_cell, with_source_forehead
    from optimswap.face.regions import forehead_mask

    cfg = SWAP.preset(size=256)
    face, photo = find_face(jennifer), to_tensor(jennifer)
    frame = make_frame(photo, face, cfg, face_region)
    shape = photo.shape[-2:]
    region = warp_from_frame(frame.mask, frame.matrix, *shape).clamp(0, 1)
    full = (region * warp_from_frame(forehead_mask(frame.landmarks, frame.size), frame.matrix, *shape))[0, 0] > 0.9
    brows, eyes = face.landmarks[17:27], face.landmarks[36:48]
    gap = eyes[:, 1].mean() - brows[:, 1].mean()
    cy, cx = brows[:, 1].min() - gap, brows[:, 0].mean()
    ys, xs = torch.meshgrid(torch.arange(shape[0]), torch.arange(shape[1]), indexing="ij")
    near = full & ((ys - cy).abs() < gap) & ((xs - cx).abs() < gap)
    bright = (photo + 0.3 * torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * (0.5 * gap) ** 2))).clamp(0, 1)
    out = with_source_forehead(bright, photo, frame, region, cfg.start_color_sigma * _pixels_per_cell(frame))

    def spread(x):
        change = (x - photo).mean(1)[0][near]
        return float(change.max() - change.min())

    assert near.sum() > gap**2 and spread(out) < 0.35 * spread(bright), (spread(out), spread(bright))
    below = ys >= int(np.ceil(brows[:, 1].max())) + 2  # the ramp is level in the frame; the head may be rolled
    assert torch.equal(out[..., below], bright[..., below])


def test_a_target_photos_own_occluder_gives_no_patches(faces, jennifer, tmp_path):
    """A bar over a target photo's cheek is no candidate for the patch loss (with keep_occluders)."""
    from optimswap.io import write_image

    target = read_image(faces / "identities" / "angelina" / "01.jpg")
    target_face = find_face(target)
    barred, bar = _with_bar(target, target_face)
    write_image(tmp_path / "barred.png", barred)
    cfg = SWAP.preset(size=128, n_targets=1)
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    with_bar = prepare_targets([tmp_path / "barred.png"], frame, cfg, torch.device("cpu"))
    without = prepare_targets([tmp_path / "barred.png"], frame, cfg.replace(keep_occluders=False),
                              torch.device("cpu"))
    scale = np.sqrt(abs(np.linalg.det(frame_matrix(target_face.landmarks, 128)[:, :2])))
    bar_cells = (bar[0].stop - bar[0].start) * (bar[1].stop - bar[1].start) * scale**2
    assert float(without.valid.sum() - with_bar.valid.sum()) > 0.7 * bar_cells
    assert with_bar.best_occluders is not None and with_bar.best_occluders[bar].mean() > 0.9


def detail_ratio(image, frame, region):
    """Fine detail of the photo ``image`` read in the working frame on ``region``, over the source frame's."""
    from optimswap.compose.detail import detail_energy

    return detail_energy(warp_to_frame(image, frame.matrix, frame.size), region) / detail_energy(frame.image, region)


def test_detail_matching_brings_a_softer_or_sharper_face_to_the_sources_detail_in_the_frame(jennifer):
    from optimswap.compose import gaussian_blur
    from optimswap.edits.swap import _pixels_per_cell, matched_detail

    cfg = SWAP.preset(size=128)
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    photo = to_tensor(jennifer)
    kept = torch.zeros_like(frame.mask)
    kept[..., 40:60, :] = 1  # a kept strip (hair): left out of the measure and of the change
    editable = frame.mask * (1 - kept)

    noise = torch.randn(photo.shape, generator=torch.Generator().manual_seed(0))
    soft = gaussian_blur(photo, 0.4 * _pixels_per_cell(frame))
    strip = warp_from_frame(kept, frame.matrix, *photo.shape[-2:]) > 0.5
    soft_with_sharp_strip = torch.where(strip, (photo + 0.2 * noise).clamp(0, 1), soft)
    noisy = (photo + 0.03 * noise).clamp(0, 1)
    for image in (soft, soft_with_sharp_strip, noisy):
        before = detail_ratio(image, frame, editable)
        after = detail_ratio(matched_detail(image, frame, editable), frame, editable)
        assert abs(before - 1) > 0.08 and abs(after - 1) < 0.02, (before, after)
    outside = warp_from_frame(editable, frame.matrix, *photo.shape[-2:])[0, 0] == 0  # the strip and the background
    matched = matched_detail(soft_with_sharp_strip, frame, editable)
    assert torch.equal(matched[0][:, outside], soft_with_sharp_strip[0][:, outside])


def test_detail_matching_sharpens_a_soft_face_in_a_frame_finer_than_the_photo(jennifer):
    """A small face in a large frame (the quality preset's 512 px on a 90-px face): the unsharp band is at least one
    photo pixel, so a face blurred by 0.7 pixel (a quarter of its detail left) is brought back to the source's."""
    from skimage.transform import rescale

    from optimswap.compose import gaussian_blur
    from optimswap.edits.swap import _pixels_per_cell, matched_detail

    small = (rescale(jennifer, 0.25, channel_axis=2, anti_aliasing=True) * 255).round().astype(np.uint8)
    cfg = SWAP.preset(size=256)
    frame = make_frame(to_tensor(small), find_face(small), cfg, face_region)
    assert _pixels_per_cell(frame) < 0.8
    soft = gaussian_blur(to_tensor(small), 0.7)
    before = detail_ratio(soft, frame, frame.mask)
    after = detail_ratio(matched_detail(soft, frame, frame.mask), frame, frame.mask)
    assert before < 0.4 and abs(after - 1) < 0.02, (before, after)  # a sub-pixel band: 0.6 at most


def test_the_source_skin_tone_evens_a_planted_paler_patch_and_leaves_the_rest(jennifer):
    """A paler, greyer patch planted on one cheek of the photo (a target photo's tone coming through) is brought back
    to the source's skin tone; the eye openings and everything outside the editable region stay bit for bit. A whole
    face planted much darker (a dark target's face on a pale source) gets its skin back, its lips, brows and eyes
    untouched (shifted by the skin's change they came out whitish and blue-grey)."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    from optimswap.edits.swap import TONE_SCALE, with_source_skin_tone
    from optimswap.eval import skin_tone_distance
    from optimswap.face.align import interocular
    from optimswap.face.skin import clean_skin

    cfg = SWAP.preset(size=128, skin_lightness_sigma=0.2)  # the lightness too at the tone's blur (the test below)
    face, photo = find_face(jennifer), to_tensor(jennifer)
    frame = make_frame(photo, face, cfg, face_region)
    region = warp_from_frame(frame.mask, frame.matrix, *photo.shape[-2:]).clamp(0, 1)
    lm = face.landmarks
    ys, xs = torch.meshgrid(torch.arange(photo.shape[-2]), torch.arange(photo.shape[-1]), indexing="ij")
    cheek = torch.tensor([(lm[2, 0] + lm[31, 0]) / 2, (lm[2, 1] + lm[31, 1]) / 2])
    radius = 0.4 * interocular(lm)
    patch = torch.exp(-((xs - cheek[0]) ** 2 + (ys - cheek[1]) ** 2) / (2 * radius ** 2))[None, None] * region

    def shifted(shift, where):
        return lab_to_rgb(rgb_to_lab(photo) + torch.tensor(shift).view(1, 3, 1, 1) * where).clamp(0, 1)

    def tone(image):
        shown = warp_to_frame(image, frame.matrix, frame.size)
        both = clean_skin([shown, frame.image], frame.landmarks, frame.size, cfg.forehead, cfg.feather)
        return skin_tone_distance(shown, frame.image, both, TONE_SCALE * interocular(frame.landmarks))

    def pixel(image, point):
        x, y = np.asarray(point).round().astype(int)
        return image[0, :, y, x]

    pale = shifted([6.0, -3.0, -4.0], patch)
    toned = with_source_skin_tone(pale, frame, region, cfg)
    assert tone(pale) > 1.0
    assert tone(toned) < 0.3 * tone(pale)
    outside = region[0, 0] == 0
    assert torch.equal(toned[0][:, outside], pale[0][:, outside])
    assert torch.equal(pixel(toned, lm[36:42].mean(0)), pixel(pale, lm[36:42].mean(0)))

    dark = shifted([-20.0, 3.0, 6.0], (region > 0.99).float())
    toned = with_source_skin_tone(dark, frame, region, cfg)
    assert tone(toned) < 0.3 * tone(dark)
    cheek_change = (pixel(toned, cheek) - pixel(dark, cheek)).abs().sum()
    assert cheek_change > 0.1
    for feature in (lm[36:42].mean(0), lm[42:48].mean(0), lm[19], lm[24], (lm[51] + lm[62]) / 2,
                    (lm[57] + lm[66]) / 2):  # eyes, brows, upper and lower lip
        assert (pixel(toned, feature) - pixel(dark, feature)).abs().sum() < 0.02 * cheek_change


def cheek_shading(image, both_cheeks):
    """The photo, its frame at 128 px, the editable region (photo pixels), the cheek centres and a Gaussian bump
    (1, 1, H, W) a quarter of the eye distance wide on one cheek or both, within the region: a cheekbone's shading."""
    from optimswap.face.align import interocular

    face, photo = find_face(image), to_tensor(image)
    frame = make_frame(photo, face, SWAP.preset(size=128), face_region)
    region = warp_from_frame(frame.mask, frame.matrix, *photo.shape[-2:]).clamp(0, 1)
    lm = face.landmarks
    ys, xs = torch.meshgrid(torch.arange(photo.shape[-2]), torch.arange(photo.shape[-1]), indexing="ij")
    cheeks = [(lm[2] + lm[31]) / 2, (lm[14] + lm[35]) / 2][:2 if both_cheeks else 1]
    radius = 0.25 * interocular(lm)
    bump = sum(torch.exp(-((xs - c[0]) ** 2 + (ys - c[1]) ** 2) / (2 * radius ** 2)) for c in cheeks)
    return photo, frame, region, cheeks, bump[None, None] * region


def test_a_coarser_skin_lightness_keeps_a_planted_cheek_shading_and_still_takes_the_colour_back(jennifer):
    """A face planted greener and yellower all over, with a highlight on one cheek the size of a cheekbone's shading
    (a target's face shape): the tone step takes the colour back at any lightness blur, but with a coarse one
    (``skin_lightness_sigma``, unbounded) it keeps most of the highlight, which the tone's fine blur flattens."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    from optimswap.edits.swap import with_source_skin_tone

    photo, frame, region, (cheek,), bump = cheek_shading(jennifer, both_cheeks=False)
    shift = torch.tensor([0.0, -5.0, 8.0]).view(1, 3, 1, 1) * (region > 0.99) + torch.tensor(
        [10.0, 0.0, 0.0]).view(1, 3, 1, 1) * bump
    planted = lab_to_rgb(rgb_to_lab(photo) + shift).clamp(0, 1)
    x, y = np.asarray(cheek).round().astype(int)

    def kept(lightness_sigma):
        toned = rgb_to_lab(with_source_skin_tone(planted, frame, region, SWAP.preset(
            size=128, skin_lightness_sigma=lightness_sigma, skin_tone_bound=0.0)))
        highlight = float(toned[0, 0, y, x] - rgb_to_lab(photo)[0, 0, y, x]) / 10
        colour = float((toned[0, 1:, y, x] - rgb_to_lab(photo)[0, 1:, y, x]).norm())
        return highlight, colour

    fine, coarse = kept(0.2), kept(1.0)
    assert fine[0] < 0.5 < 0.7 < coarse[0], (fine, coarse)
    assert fine[1] < 3 and coarse[1] < 3, (fine, coarse)  # planted: 9.4


def test_the_skin_shading_from_the_start_takes_the_starts_cheek_highlight_not_the_results(jennifer):
    """The optimized face with a highlight on one cheek, the classic start with one on the other (cheekbone-sized):
    with ``skin_shading="start"`` and a coarse lightness blur the start's highlight is kept and the result's
    flattened (the part of them between the two blurs); with ``"result"`` the other way round."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    from optimswap.edits.swap import with_source_skin_tone

    photo, frame, region, (left,), left_bump = cheek_shading(jennifer, both_cheeks=False)
    _, _, _, (_, right), both_bumps = cheek_shading(jennifer, both_cheeks=True)
    right_bump = both_bumps - left_bump

    def lit(bump):
        return lab_to_rgb(rgb_to_lab(photo) + torch.cat([10 * bump, 0 * bump, 0 * bump], 1)).clamp(0, 1)

    def highlights(shading):  # the share of each planted highlight the toned result shows
        toned = rgb_to_lab(with_source_skin_tone(lit(left_bump), frame, region, SWAP.preset(
            size=128, skin_lightness_sigma=1.0, skin_tone_bound=0.0, skin_shading=shading), start=lit(right_bump)))
        return [float(toned[0, 0, y, x] - rgb_to_lab(photo)[0, 0, y, x]) / 10
                for x, y in (np.asarray(c).round().astype(int) for c in (left, right))]

    (result_left, result_right), (start_left, start_right) = highlights("result"), highlights("start")
    # The shading between the blurs is moved, not the finer part of a bump this size: about half of each.
    assert result_left > 0.7 and abs(result_right) < 0.1, (result_left, result_right)
    assert start_left < 0.5 * result_left and start_right > 0.3, (start_left, start_right)


def test_the_tone_bound_keeps_a_faint_planted_shading_and_takes_a_strong_one_back_to_within_it(jennifer):
    """A shading planted on both cheeks the size of a cheekbone's: faint (a target's face shape on a like skin) or
    strong (a dark target's shading on a pale face). With a coarse lightness blur and a bound on the skin's tone
    (eval's measure), the faint one is kept as without the bound; of the strong one only as much is kept as leaves
    the tone within the bound, where the unbounded coarse blur leaves it beyond."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    from optimswap.edits.swap import TONE_SCALE, with_source_skin_tone
    from optimswap.eval.metrics import skin_tone_distance
    from optimswap.face.align import interocular
    from optimswap.face.skin import clean_skin

    cfg, bound = SWAP.preset(size=128), 2.5
    photo, frame, region, _, bump = cheek_shading(jennifer, both_cheeks=True)

    def toned(depth, **options):  # the shading of ``depth`` L units planted, then the tone step
        planted = lab_to_rgb(rgb_to_lab(photo) + torch.cat([depth * bump, 0 * bump, 0 * bump], 1)).clamp(0, 1)
        return with_source_skin_tone(planted, frame, region, SWAP.preset(size=128, **options))

    def tone(image):  # as eval measures it
        shown = warp_to_frame(image, frame.matrix, frame.size)
        both = clean_skin([shown, frame.image], frame.landmarks, frame.size, cfg.forehead, cfg.feather)
        return skin_tone_distance(shown, frame.image, both, TONE_SCALE * interocular(frame.landmarks))

    fine = dict(skin_lightness_sigma=0.2)
    coarse, bounded = dict(skin_lightness_sigma=1.0, skin_tone_bound=0.0), dict(skin_lightness_sigma=1.0,
                                                                                skin_tone_bound=bound)
    faint, strong = -4.0, -15.0
    assert torch.equal(toned(faint, **bounded), toned(faint, **coarse))
    assert tone(toned(faint, **coarse)) > 1.5 * tone(toned(faint, **fine))  # the fine blur flattens it
    assert tone(toned(strong, **fine)) < tone(toned(strong, **bounded)) <= bound < tone(toned(strong, **coarse))


def test_the_feature_tone_brings_planted_whitish_lips_back_to_the_sources_and_leaves_the_eyes(jennifer):
    """Lips planted paler and greyer (a dark target's lips colour-matched onto a pale source) get the source's mean lip
    colour back; the eyes and everything outside the editable region stay bit for bit."""
    from kornia.color import lab_to_rgb, rgb_to_lab

    from optimswap.edits.swap import with_source_feature_tone
    from optimswap.face.regions import lips_mask

    cfg = SWAP.preset(size=128)
    face, photo = find_face(jennifer), to_tensor(jennifer)
    frame = make_frame(photo, face, cfg, face_region)
    region = warp_from_frame(frame.mask, frame.matrix, *photo.shape[-2:]).clamp(0, 1)
    lips = warp_from_frame(lips_mask(frame.landmarks, frame.size), frame.matrix, *photo.shape[-2:]) > 0.5
    lab = rgb_to_lab(photo)
    pale = lab_to_rgb(lab + torch.tensor([18.0, -12.0, -6.0]).view(1, 3, 1, 1) * lips).clamp(0, 1)

    def lip_colour(image):
        return rgb_to_lab(image)[0][:, lips[0, 0]].mean(1)

    toned = with_source_feature_tone(pale, frame, region, cfg)
    before = (lip_colour(pale) - lip_colour(photo)).norm()
    assert before > 10
    assert (lip_colour(toned) - lip_colour(photo)).norm() < 0.25 * before
    outside = region[0, 0] == 0
    assert torch.equal(toned[0][:, outside], pale[0][:, outside])
    x, y = face.landmarks[36:42].mean(0).round().astype(int)
    assert torch.equal(toned[0, :, y, x], pale[0, :, y, x])


def test_the_start_is_the_sharpest_of_the_pool_and_the_finest_layers_use_the_sharpest_photos(jennifer, tmp_path):
    """Of two copies of one photo, one blurred (the same shape): the sharp one is the start whatever its shape rank;
    with no shape margin the closest shape; the finest layers take patches from the sharp one only."""
    from PIL import Image, ImageFilter

    from optimswap.compose.detail import fine_detail_ratio
    from optimswap.face.mask import face_mask

    photo = Image.fromarray(jennifer).resize((jennifer.shape[1] // 2, jennifer.shape[0] // 2), Image.LANCZOS)
    photo.save(tmp_path / "sharp.png")
    photo.filter(ImageFilter.GaussianBlur(2)).save(tmp_path / "soft.png")
    paths = [tmp_path / "soft.png", tmp_path / "sharp.png"]
    cfg = SWAP.preset(size=128, n_targets=2, relight_targets=False, keep_occluders=False)
    device = torch.device("cpu")
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    mask = face_mask(frame.landmarks, 128)
    assert fine_detail_ratio(frame.image, mask) > fine_detail_ratio(to_tensor(np.asarray(
        Image.fromarray(jennifer).filter(ImageFilter.GaussianBlur(3)))), torch.ones(1, 1, *jennifer.shape[:2]))
    pooled = prepare_targets(paths, frame, cfg.replace(start_shape_margin=0.15, fine_targets=0.5), device)
    assert pooled.used[0]["path"].endswith("sharp.png")
    assert pooled.used[0]["sharpness"] > pooled.used[1]["sharpness"]
    assert pooled.fine.flatten().tolist() == [1.0, 0.0]
    closest = prepare_targets(paths, frame, cfg.replace(start_shape_margin=0.0, fine_targets=1.0), device)
    assert closest.used[0]["shape_distance"] <= closest.used[1]["shape_distance"]
    assert closest.fine.flatten().tolist() == [1.0, 1.0]


def test_the_expression_warp_raises_a_target_photos_brows_to_a_planted_raised_source_brow(jennifer, tmp_path):
    """The source's brows planted higher over its eyes: with expression_warp the target photo (the same face) has its
    brows moved up by about as much in the frame, its mouth and nose where they were."""
    from PIL import Image

    Image.fromarray(jennifer).resize((jennifer.shape[1] // 2, jennifer.shape[0] // 2), Image.LANCZOS).save(
        tmp_path / "target.png")
    cfg = SWAP.preset(size=128, n_targets=1, relight_targets=False, keep_occluders=False, color_match_targets=False,
                      facial_hair="source")
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)
    raise_px = 4.0
    frame.landmarks = frame.landmarks.copy()
    frame.landmarks[17:27, 1] -= raise_px
    device = torch.device("cpu")
    still = prepare_targets([tmp_path / "target.png"], frame, cfg.replace(expression_warp=0.0), device).images
    raised = prepare_targets([tmp_path / "target.png"], frame, cfg.replace(expression_warp=1.0), device).images
    lightness = raised.mean(1)[0], still.mean(1)[0]

    def shift(rows: slice, cols: slice) -> int:
        """The vertical shift (frame pixels, up > 0) that best takes the unwarped band onto the warped one."""
        moved, base = (x[rows, cols] for x in lightness)
        errors = {s: float((torch.roll(base, -s, 0) - moved)[4:-4].abs().mean()) for s in range(-6, 7)}
        return min(errors, key=errors.get)

    brows, nose, mouth = (frame.landmarks[i].round().astype(int) for i in (slice(17, 27), slice(30, 36),
                                                                          slice(48, 60)))

    def band(points):
        return (slice(points[:, 1].min() - 8, points[:, 1].max() + 8), slice(points[:, 0].min(), points[:, 0].max()))

    assert shift(*band(brows)) in (3, 4, 5)  # brows: the planted 4 px, to the warp's and the resampling's pixel
    assert shift(*band(nose)) == 0 and shift(*band(mouth)) == 0


def test_a_closed_source_mouth_takes_no_patches_from_a_target_photos_open_mouth(jennifer, faces):
    """jennifer/01's lips are closed, angelina/01 smiles with her teeth: with ``skip_open_mouths`` the target photo
    gives no patches inside its mouth opening (nor its inner lip rims); without it, or for a source whose own lips are
    parted (angelina/01 onto herself), the opening stays usable."""
    from optimswap.edits.swap import mouth_opening

    smiling = faces / "identities" / "angelina" / "01.jpg"
    cfg = SWAP.preset(size=128, n_targets=1, relight_targets=False, keep_occluders=False, expression_warp=0.0,
                      color_match_targets=False)
    device = torch.device("cpu")

    def opening_usable(source, skip):
        frame = make_frame(to_tensor(source), find_face(source), cfg, face_region)
        targets = prepare_targets([smiling], frame, cfg.replace(skip_open_mouths=skip), device)
        landmarks = frame_landmarks(smiling, cfg.size)
        inside = torch.as_tensor(mouth_opening(landmarks, (cfg.size, cfg.size)))
        assert inside.sum() > 20  # the teeth of a broad smile
        return float(targets.valid[0, 0][inside].mean())

    assert opening_usable(jennifer, skip=True) == 0.0
    assert opening_usable(jennifer, skip=False) > 0.9
    assert opening_usable(read_image(smiling), skip=True) > 0.9


def test_parted_on_closed_tells_parted_lips_on_a_closed_mouth_beyond_the_detectors_spread(jennifer):
    """A photo whose lips are apart by 0.12 eye distances under jennifer/01's closed ones is parted on closed; by 0.07
    (within the detector's spread of the closed bound) it is not, nor a closed photo under an open source."""
    from optimswap.edits.swap import parted_on_closed

    source = find_face(jennifer).landmarks  # lips closed
    eye = np.linalg.norm(source[45] - source[36])

    def parted(gap):
        points = source.copy()
        points[[61, 62, 63]] -= [0, gap * eye]  # the upper inner lip raised
        return points

    assert parted_on_closed(source, parted(0.12))
    assert not parted_on_closed(source, parted(0.07))
    assert not parted_on_closed(source, source)
    assert not parted_on_closed(parted(0.12), source)


def test_the_start_is_the_closest_photo_whose_lips_are_closed_like_the_sources(jennifer, faces):
    """jennifer/01's lips are closed. tony_blair/01, closer in shape, smiles with parted lips; mark/02's are closed:
    with ``start_closed_lips`` the start is mark/02, without it (or for the classic method) tony_blair/01; where every
    photo's lips are parted the closest one is still the start."""
    people = faces / "identities"
    open_, closed = people / "tony_blair" / "01.jpg", people / "mark" / "02.jpg"
    also_open = people / "tony_blair" / "05.jpg"
    cfg = SWAP.preset(size=128, n_targets=8, relight_targets=False, keep_occluders=False, expression_warp=0.0)
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, face_region)

    def start(paths, **options):
        return prepare_targets(paths, frame, cfg.replace(**options), torch.device("cpu")).used[0]["path"]

    assert start([closed, open_], start_closed_lips=False) == str(open_)  # the closest shape
    assert start([closed, open_], start_closed_lips=True) == str(closed)
    assert start([closed, open_], start_closed_lips=True, method="classic") == str(open_)
    assert start([also_open, open_], start_closed_lips=True) == str(open_)


def test_a_closed_source_mouth_keeps_its_own_lips_in_the_start_when_the_start_photo_smiles(jennifer, faces):
    """jennifer/01's lips are closed, tony_blair/01's apart: with ``start_source_lips`` the start has her lips bit for
    bit (``lips_and_rim``), without it tony_blair's warped mouth; a photo with closed lips (mark/02) changes
    nothing."""
    from optimswap.edits.swap import lips_and_rim, parted_on_closed, prepare
    from optimswap.registry import Setup

    people = faces / "identities"
    face = find_face(jennifer)
    cfg = SWAP.preset(size=128, iters=1, relight_targets=False, start_closed_lips=False)

    def start(target, **options):
        setup = Setup(jennifer, face, make_frame(to_tensor(jennifer), face, cfg, face_region), {"target": [target]},
                      cfg.replace(**options), torch.device("cpu"))
        plan = prepare(setup)
        assert plan.record["source_lips_in_start"] == options["start_source_lips"]
        return (plan.start[0].permute(1, 2, 0).numpy() * 255).round()

    smiling = people / "tony_blair" / "01.jpg"
    assert parted_on_closed(face.landmarks, find_face(read_image(smiling)).landmarks)
    assert not parted_on_closed(face.landmarks, find_face(read_image(people / "mark" / "02.jpg")).landmarks)
    assert not parted_on_closed(face.landmarks, face.landmarks)
    lips = lips_and_rim(face.landmarks, jennifer.shape[:2])
    assert lips.sum() > 200
    kept, warped = start(smiling, start_source_lips=True), start(smiling, start_source_lips=False)
    assert np.array_equal(kept[lips], jennifer[lips].astype(float))
    assert np.abs(warped[lips] - jennifer[lips]).mean() > 10


def test_lowered_lids_keep_the_sources_eyes_in_the_start_with_start_source_eyes(jennifer, faces):
    """A photo whose upper lid is two thirds of the way down is lowered against jennifer/01's open eyes (her own
    landmarks are not); venus_williams/01 looks down: with ``start_source_eyes`` the start has jennifer's eyes and
    their rim bit for bit, without it not."""
    from optimswap.edits.swap import eyes_and_rim, lids_lowered, prepare
    from optimswap.registry import Setup

    face = find_face(jennifer)
    lowered = face.landmarks.copy()
    for upper, lower in ((37, 41), (38, 40)):
        lowered[upper] += (face.landmarks[lower] - face.landmarks[upper]) * 2 / 3
    assert lids_lowered(face.landmarks, lowered)
    assert not lids_lowered(face.landmarks, face.landmarks)
    assert not lids_lowered(lowered, face.landmarks)
    looking_down = faces / "lfw" / "venus_williams" / "01.jpg"
    assert lids_lowered(face.landmarks, find_face(read_image(looking_down)).landmarks)
    cfg = SWAP.preset(size=128, iters=1, relight_targets=False)
    eyes = eyes_and_rim(face.landmarks, jennifer.shape[:2])

    def start(**options):
        setup = Setup(jennifer, face, make_frame(to_tensor(jennifer), face, cfg, face_region),
                      {"target": [looking_down]}, cfg.replace(**options), torch.device("cpu"))
        plan = prepare(setup)
        assert plan.record["source_eyes_in_start"] == options["start_source_eyes"]
        return (plan.start[0].permute(1, 2, 0).numpy() * 255).round()

    assert np.array_equal(start(start_source_eyes=True)[eyes], jennifer[eyes].astype(float))
    assert np.abs(start(start_source_eyes=False)[eyes] - jennifer[eyes]).mean() > 10


def test_a_clip_decides_on_keeping_the_source_lips_on_its_first_face(jennifer, faces):
    """A clip whose first face (jennifer/01) has closed lips under a smiling start photo keeps the source's lips in
    every later frame's start, one with parted lips (angelina/01) too: lips switching between the source's and the
    photo's from frame to frame would flicker."""
    from optimswap.edits.swap import lips_and_rim, prepare
    from optimswap.registry import Setup

    smiling = faces / "identities" / "tony_blair" / "01.jpg"
    later = read_image(faces / "identities" / "angelina" / "01.jpg")
    cfg = SWAP.preset(size=128, iters=1, relight_targets=False)
    clip: dict = {}
    for photo in (jennifer, later):
        face = find_face(photo)
        setup = Setup(photo, face, make_frame(to_tensor(photo), face, cfg, face_region), {"target": [smiling]}, cfg,
                      torch.device("cpu"), clip=clip)
        start = (prepare(setup).start[0].permute(1, 2, 0).numpy() * 255).round()
        lips = lips_and_rim(face.landmarks, photo.shape[:2])
        assert np.array_equal(start[lips], photo[lips].astype(float))
    assert clip["source_lips"]


def frame_landmarks(path, size):
    """The landmarks of the photo at ``path`` in its own working frame of ``size`` pixels."""
    from optimswap.face.align import apply_matrix

    face = find_face(read_image(path))
    return apply_matrix(frame_matrix(face.landmarks, size), face.landmarks)
