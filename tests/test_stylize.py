from pathlib import Path

import numpy as np
import pytest
import torch

from optimswap.edits.stylize import (
    STYLIZE,
    StyleReference,
    chunk_coordinates,
    copy_pixels,
    feature_mask,
    identity_proxy,
    make_guides,
    onto_person,
    person_share,
    stylize,
    stylize_objective,
)
from optimswap.face import find_face, interocular
from optimswap.features import load_encoder
from optimswap.io import read_image, to_tensor
from optimswap.optim import LBFGS
from optimswap.pipeline import Level, make_frame


@pytest.fixture(scope="module")
def style(faces) -> np.ndarray:
    return read_image(faces / "styles" / "01.jpg")


@pytest.fixture(scope="module")
def tony(faces) -> np.ndarray:
    return read_image(faces / "identities" / "tony_blair" / "01.jpg")


def _guides(photo, style, size, region="head", device="cpu"):
    cfg = STYLIZE.preset(size=size, region=region)
    frame = make_frame(to_tensor(photo, device), find_face(photo), cfg, STYLIZE.mask)
    return cfg, frame, make_guides(style, find_face(style), frame, cfg)


def test_positional_guide_maps_exemplar_landmarks_onto_the_photos(jennifer, style):
    _, frame, guides = _guides(jennifer, style, 256)
    points = np.round(frame.landmarks[:60]).astype(int)  # the inner lips do not drive the spline
    at_points = guides.position[0][:, points[:, 1], points[:, 0]].T.numpy()
    # The guide at a pixel centre vs the exemplar landmark shifted by that pixel's rounding.
    expected = guides.landmarks[:60] + (points - frame.landmarks[:60])
    assert np.abs(at_points - expected).max() <= 1.0


def test_the_guide_sends_the_photos_person_onto_the_exemplars_person_only():
    """A disc of person in the exemplar, a guide that sends a band of the photo onto its background: the photo's
    person pixels come back onto the disc (mirrored, so not all onto its rim), its background pixels stay."""
    size = 64
    ys, xs = np.mgrid[:size, :size].astype(np.float32)
    exemplar_person = ((xs - 32) ** 2 + (ys - 32) ** 2 < 20**2).astype(np.float32)
    position = np.stack([xs, ys])
    photo_person = (xs < 48).astype(np.float32)  # the photo's person reaches past the disc on its left half
    fixed = onto_person(position, exemplar_person, photo_person)
    at = exemplar_person[np.clip(np.rint(fixed[1]), 0, 63).astype(int), np.clip(np.rint(fixed[0]), 0, 63).astype(int)]
    assert (at[photo_person > 0.5] == 1).all()
    assert np.array_equal(fixed[:, photo_person < 0.5], position[:, photo_person < 0.5])
    assert np.array_equal(fixed[:, exemplar_person > 0.5], position[:, exemplar_person > 0.5])
    moved = (photo_person > 0.5) & (exemplar_person < 0.5)
    depth = np.hypot(fixed[0][moved] - 32, fixed[1][moved] - 32)
    assert depth.min() < 15  # mirrored into the disc, not piled on its edge (radius 20)


def test_the_head_region_takes_the_hair_and_stops_at_the_jaw(jennifer):
    """Above the brows up to the hair and beside the temples: edited; the neck under the chin: not (the positional
    guide would paint it with what the exemplar has under its chin)."""
    cfg = STYLIZE.preset(size=256, region="head")
    frame = make_frame(to_tensor(jennifer), find_face(jennifer), cfg, STYLIZE.mask)
    mask, points = frame.mask[0, 0], frame.landmarks
    eye = interocular(points)

    def at(xy):
        x, y = np.rint(xy).astype(int)
        return float(mask[y, x])

    chin, brows = points[8], points[17:27].mean(0)
    assert at(brows - [0, 1.2 * eye]) > 0.9  # the hair above the forehead
    assert at(points[0] - [0.3 * eye, 0]) > 0.9  # beside the temple
    assert at(chin) > 0.7
    assert at(chin + [0, 0.6 * eye]) < 0.05  # the neck
    assert at(points[6] + [0, 0.6 * eye]) < 0.05


def test_preview_copies_only_exemplar_pixels(jennifer, style):
    _, _, guides = _guides(jennifer, style, 128)
    copied = copy_pixels(guides.exemplar, chunk_coordinates(guides, 4, 3))
    exemplar_values = {tuple(v) for v in (guides.exemplar[0].reshape(3, -1).T * 255).round().int().tolist()}
    photo_values = {tuple(v) for v in (to_tensor(style)[0].reshape(3, -1).T * 255).round().int().tolist()}
    assert exemplar_values <= photo_values  # nearest-neighbour frame: the exemplar's own colours
    assert {tuple(v) for v in (copied[0].reshape(3, -1).T * 255).round().int().tolist()} <= exemplar_values


def test_the_preview_follows_the_photos_features_not_the_exemplars(jennifer, style):
    """On eyes, brows, nose and mouth the default preview's fine structure (appearance guide) follows the photo's
    more closely than with 8-px chunks searched within 10 px, which pasted the exemplar's own features (512 px:
    correlation 0.71 vs 0.66 with the charcoal exemplar, 0.74-0.77 vs 0.65-0.72 with the other four)."""
    from optimswap.edits.stylize import appearance_guide, preview

    cfg, frame, guides = _guides(jennifer, style, 512)
    features = feature_mask(frame.landmarks, 512)[0, 0] > 0.5
    sigma = cfg.appearance_sigma * 512

    def likeness(c):
        out = appearance_guide(preview(guides, c), sigma)[0, 0][features]
        return float(torch.corrcoef(torch.stack([out, guides.appearance[0, 0][features]]))[0, 1])

    assert likeness(cfg) > likeness(cfg.replace(chunk=0.016, chunk_search=0.02)) + 0.03


def test_optimization_lowers_the_style_distance(jennifer, style, device):
    cfg, frame, guides = _guides(jennifer, style, 64, device=device)
    encoder = load_encoder(cfg.encoder, device)
    objective = stylize_objective(guides, frame, cfg, device)(Level(64, frame.image, frame.mask, frame.image))
    param = frame.image.clone()
    LBFGS(refresh_every=5).run([param], lambda: frame.image + frame.mask * (param - frame.image), objective, 10,
                               progress=False)
    result = (frame.image + frame.mask * (param - frame.image)).clamp(0, 1).detach()
    reference = StyleReference(guides.warped_exemplar(), frame.mask, encoder)
    before, after = reference(frame.image), reference(result)
    assert after["gram"] < 0.8 * before["gram"]


def test_the_gram_term_brings_the_exemplars_statistics_closer_than_the_patch_loss_alone(jennifer, style):
    cfg, frame, guides = _guides(jennifer, style, 64)
    encoder = load_encoder(cfg.encoder, "cpu")
    reference = StyleReference(guides.warped_exemplar(), frame.mask, encoder)

    def gram_after(c):
        objective = stylize_objective(guides, frame, c, torch.device("cpu"))(Level(64, frame.image, frame.mask,
                                                                                   frame.image))
        param = frame.image.clone()
        LBFGS(refresh_every=5).run([param], lambda: frame.image + frame.mask * (param - frame.image), objective, 25,
                                   progress=False)
        return reference((frame.image + frame.mask * (param - frame.image)).clamp(0, 1).detach())["gram"]

    assert gram_after(cfg) < 0.8 * gram_after(cfg.replace(gram_weight=0.0))  # measured 0.34 vs 0.47


def test_identity_weight_keeps_the_person(tony, faces, device):
    """In the default portrait (the whole photo in the frame, the face a fraction of it) the identity terms hold
    the face: the dlib-free identity proxy to the photo is lower with them than without."""
    runs = {w: stylize(tony, faces / "styles" / "02.jpg", STYLIZE.preset(size=128, levels=1, iters=8,
                                                                        identity_weight=w, device=str(device)),
                       progress=False)
            for w in (0.0, STYLIZE.preset().identity_weight)}
    encoder = load_encoder("vgg16-hed", device)
    cfg = STYLIZE.preset(size=128, levels=1)
    proxy = {w: identity_proxy(r.frame_result, r.frame.image, r.frame.landmarks, r.frame.mask, cfg, encoder)
             for w, r in runs.items()}
    assert proxy[STYLIZE.preset().identity_weight] < proxy[0.0]
    assert feature_mask(runs[0.0].frame.landmarks, 128).sum() > 0


def test_preview_method_and_cli(cli, faces, tmp_path):
    """The default portrait from the command line, scored by eval: nothing of the photograph is left outside the
    face, and over the whole picture the colours moved most of the way to the exemplar's."""
    from optimswap.eval.report import evaluate_record

    out = tmp_path / "s.png"
    code, _, err = cli("stylize", faces / "identities" / "tony_blair" / "01.jpg", faces / "styles" / "04.jpg", "-o",
                       out, "--method", "preview", "--size", "128", "-q")
    assert code == 0, err
    assert read_image(out).shape == read_image(faces / "identities" / "tony_blair" / "01.jpg").shape
    row = evaluate_record(out.with_suffix(".json"))
    assert row["share_of_photo"] < 0.05
    assert row["colour_whole_after"] < 0.5 * row["colour_whole_before"]


def test_style_without_a_face_is_a_one_line_error(cli, faces, tmp_path):
    blank = tmp_path / "blank_style.png"
    from optimswap.io import write_image
    write_image(blank, np.full((200, 160, 3), 200, np.uint8))
    code, _, err = cli("stylize", faces / "identities" / "mark" / "01.jpg", blank, "-o", tmp_path / "o.png",
                       "--size", "64", "--levels", "1", "--iters", "1", "-q")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "blank_style.png" in err


def test_the_exemplar_placed_in_the_photo_scores_close_to_it(faces, tmp_path):
    """eval reads the output back from the photo into the frame, and the exemplar the same way: the warped
    exemplar itself, pasted into jennifer's 1024-px photo, scores a small share of the photo's Gram distance (0.27
    at 256 px; read against its frame copy it kept 0.45, the resampling alone)."""
    from optimswap.eval.report import evaluate_record
    from optimswap.face import warp_from_frame
    from optimswap.io import write_image
    from optimswap.runs import run_to_files

    photo_path, style_path = faces / "identities" / "jennifer" / "01.jpg", faces / "styles" / "03.jpg"
    out = tmp_path / "s.png"
    cfg = STYLIZE.preset(method="preview", size=256, region="head")
    run_to_files("stylize", photo_path, {"style": style_path}, out, cfg, progress=False)
    photo, style = read_image(photo_path), read_image(style_path)
    cfg, frame, _ = _guides(photo, style, 256)
    guides = make_guides(style, find_face(style), frame, cfg, person_share(photo))  # as eval builds them
    h, w = photo.shape[:2]
    pasted = to_tensor(photo) + warp_from_frame(frame.mask, frame.matrix, h, w).clamp(0, 1) * (
        warp_from_frame(guides.warped_exemplar(), frame.matrix, h, w) - to_tensor(photo))
    write_image(out, (pasted[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8))
    row = evaluate_record(out.with_suffix(".json"))
    assert row["gram_after"] < 0.35 * row["gram_before"]


def _portrait(photo, style, size=128):
    cfg = STYLIZE.preset(size=size)
    person = person_share(photo)
    frame = make_frame(to_tensor(photo), find_face(photo), cfg, STYLIZE.mask)
    return cfg, frame, person, make_guides(style, find_face(style), frame, cfg, person)


def _in_frame(style, photo, frame, cfg, image):
    """The exemplar-sized ``image`` placed in the frame as the portrait places the exemplar (0 beyond it)."""
    from kornia.geometry.transform import warp_affine

    from optimswap.edits.stylize import exemplar_matrix
    matrix = torch.as_tensor(exemplar_matrix(find_face(style).landmarks, find_face(photo).landmarks, frame.matrix,
                                             cfg), dtype=torch.float32)[None]
    return warp_affine(image, matrix, (cfg.size, cfg.size))[0, 0]


def test_the_portrait_sends_person_onto_person_and_background_onto_the_backdrop(tony, faces):
    """The portrait's positional guide: the photo's person (MediaPipe, half share) lands on the exemplar's sitter,
    its background on the exemplar's backdrop clear of the sitter."""
    from optimswap.face import warp_to_frame
    style = read_image(faces / "styles" / "03.jpg")
    cfg, frame, person, guides = _portrait(tony, style)
    sitter = _in_frame(style, tony, frame, cfg, person_share(style))
    x, y = (c.round().long() for c in guides.position[0])
    at = sitter[y, x]
    photo_person = warp_to_frame(person, frame.matrix, 128)[0, 0]
    in_photo = warp_to_frame(torch.ones_like(person), frame.matrix, 128)[0, 0] > 0.5
    assert float((at[(photo_person > 0.5) & in_photo] > 0.5).float().mean()) > 0.99  # measured 0.996
    assert (at[(photo_person < 0.5) & in_photo] < 0.05).all()


def test_the_portrait_copies_only_from_inside_the_exemplars_picture(faces):
    """mark's small face places the exemplar small in the frame: no copied pixel (nor any voted neighbour) and no
    positional guide value lies beyond the exemplar's picture, where the frame holds its mirror image."""
    mark, style = read_image(faces / "identities" / "mark" / "01.jpg"), read_image(faces / "styles" / "03.jpg")
    cfg, frame, _, guides = _portrait(mark, style)
    picture = _in_frame(style, mark, frame, cfg, torch.ones(1, 1, *style.shape[:2])) > 0.5
    assert not picture.all()  # the frame does reach beyond the exemplar
    coords = chunk_coordinates(guides, 2, 5)
    assert picture[coords[0], coords[1]].all()
    x, y = guides.position[0]
    assert picture[y.round().long(), x.round().long()].all()
    y0, y1, x0, x1 = guides.bounds
    assert picture[y0:y1 + 1, x0:x1 + 1].all()


def test_quilt_reads_only_the_source_and_matches_its_neighbours():
    """A source of two regions, one striped and one flat: every quilted pixel comes from the source, and the seams
    match (the squares chosen continue their neighbours' stripes) far better than random squares."""
    from optimswap.edits.stylize import quilt
    size, tile = 64, 8
    ys, xs = np.mgrid[:size, :size]
    image = np.repeat((np.sin(xs / 2.0) > 0)[..., None], 3, 2).astype(np.float32)
    source = (ys > 8) & (ys < 56) & (xs > 4)
    target = np.ones((size, size), bool)
    position = quilt(image, source, target, tile, np.random.default_rng(0))
    x, y = position.astype(int)
    assert source[y, x].all()
    quilted = image[y, x, 0]
    random = image[y, np.random.default_rng(1).integers(5, size - tile, (size // tile, size // tile)).repeat(tile, 0)
                   .repeat(tile, 1) + xs % tile, 0]
    seams = np.arange(tile, size, tile)
    assert np.abs(quilted[:, seams] - quilted[:, seams - 1]).mean() < 0.5 * np.abs(
        random[:, seams] - random[:, seams - 1]).mean()


def test_the_background_of_an_exemplar_without_backdrop_takes_its_non_face_areas(tony, faces):
    """The illustration (05) has hair and flowers to its edges: tony's background is quilted from what lies outside
    its face (the hair included), so it reads no pixel of the face and takes the colour statistics of those areas
    as placed in the frame, not those of the photo's wall."""
    from optimswap.edits.stylize import preview
    from optimswap.face.mask import face_polygon, grow, polygon_mask
    style = read_image(faces / "styles" / "05.jpg")
    cfg, frame, _, guides = _portrait(tony, style)
    landmarks = guides.landmarks
    face = polygon_mask(grow(face_polygon(landmarks, cfg.forehead), 0.3 * interocular(landmarks)), 128)[0, 0] > 0.5
    picture = _in_frame(style, tony, frame, cfg, torch.ones(1, 1, *style.shape[:2])) > 0.5
    background = (guides.person[0, 0] < 0.5) & (frame.image[0].sum(0) > 0)
    x, y = (c.round().long() for c in guides.position[0])
    assert not face[y, x][background].any()
    out = preview(guides, cfg)[0]
    # The mean colour (a quilt keeps to the texture its seams continue, here mostly the pink hair: its spread is the
    # wall's, 0.09-0.10). Measured: 0.075 off the non-face areas' mean, the photo's wall 0.169.
    non_face = guides.exemplar[0][:, picture & ~face].mean(1)
    to_non_face = (out[:, background].mean(1) - non_face).abs().max()
    assert to_non_face < 0.5 * (frame.image[0][:, background].mean(1) - non_face).abs().max()


def test_the_portrait_background_takes_the_exemplars_backdrop_colours(tony, faces):
    """tony_blair's beige and red wall in the dark oil exemplar (03): the preview's background has the colour mean
    and spread of the exemplar's backdrop, not of the photo's wall; the person's pixels are edited too."""
    style = read_image(faces / "styles" / "03.jpg")
    result = stylize(tony, style, STYLIZE.preset(method="preview", size=128), progress=False)
    background, person = person_share(tony)[0, 0] < 0.05, person_share(tony)[0, 0] > 0.95
    backdrop = to_tensor(style)[0][:, person_share(style)[0, 0] < 0.05]
    out, photo = to_tensor(result.image)[0], to_tensor(tony)[0]

    def stats(pixels):
        return torch.cat([pixels.mean(1), pixels.std(1)])

    to_backdrop = (stats(out[:, background]) - stats(backdrop)).abs().max()
    photo_to_backdrop = (stats(photo[:, background]) - stats(backdrop)).abs().max()
    assert to_backdrop < 0.25 * photo_to_backdrop
    assert float((out[:, person] - photo[:, person]).abs().mean()) > 0.05


def test_the_head_region_reproduces_the_head_only_stylization(tony, faces):
    """``--region head`` is the stylization as it was before the portrait became the default: the same frame
    (preview at 128 px, to the level) and the same optimization (64 px, 4 iterations, to a few levels), against
    outputs saved by that code."""
    saved = np.load(Path(__file__).parent / "data" / "stylize_head_tony_blair_04.npz")
    style = faces / "styles" / "04.jpg"
    for name, cfg, tolerance in (("preview", STYLIZE.preset(method="preview", size=128, region="head"), 1),
                                 ("optimize", STYLIZE.preset(size=64, levels=1, iters=4, region="head"), 3)):
        frame = stylize(tony, style, cfg, progress=False).frame_result[0].permute(1, 2, 0).numpy()
        difference = np.abs((frame * 255).round() - saved[name].astype(np.float64))
        assert difference.max() <= tolerance, name


def test_the_chroma_match_greys_a_tint_on_a_charcoal_exemplar_and_keeps_the_lightness():
    """A lilac tint on a grey-drawn person (as the feature losses left on light clothes): mapped onto a grey
    reference's chroma, the person's pixels are grey again, with their lightness; pixels outside the mask are kept."""
    from kornia.color import rgb_to_lab

    from optimswap.edits.stylize import match_chroma
    grey = torch.rand(1, 1, 32, 32).expand(1, 3, 32, 32)
    tinted = (grey + torch.tensor([0.06, 0.0, 0.08])[None, :, None, None] * (grey > 0.3)).clamp(0, 1)
    mask = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    mask[..., :, :24] = True
    out = match_chroma(tinted, mask, torch.rand(1, 1, 16, 16).expand(1, 3, 16, 16), torch.ones(1, 1, 16, 16) > 0)
    lab_in, lab_out = rgb_to_lab(tinted), rgb_to_lab(out)
    inside = mask[0, 0]
    assert lab_in[0, 1:][:, inside].abs().max() > 5
    assert lab_out[0, 1:][:, inside].abs().max() < 1.0
    assert (lab_out[0, 0] - lab_in[0, 0])[inside].abs().max() < 1.0
    assert torch.equal(out[..., 24:], tinted[..., 24:])
