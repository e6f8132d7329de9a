"""StyleGAN2 (issue #15): the generator, its checkpoint layouts, refusing unsafe pickles, inversion, directions.

Every generator here is a tiny random one (32 px, few channels, seeded); no weights are downloaded.
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_gan import TINY, tiny_generator
from torch import nn

from optimswap.errors import BackendUnavailable, OptimswapError, OptionError
from optimswap.face import ffhq_quad, find_face, frame_matrix, warp_to_frame
from optimswap.face.align import apply_matrix, warp_from_frame
from optimswap.gan import Generator, UnsafeCheckpoint, from_state_dict, load_generator
from optimswap.gan.checkpoint import save_generator
from optimswap.gan.directions import (
    MIN_SCORED,
    conditional,
    edit_latent,
    fit_direction,
    fit_from_scorer,
    fit_from_scores,
    load_direction,
    resolve_moves,
    sample_and_score,
    save_directions,
    sefa,
)
from optimswap.gan.edit import INVERT_PRESETS, project
from optimswap.gan.invert import save_latent
from optimswap.gan.scorers import eye_aspect, landmark_scorer
from optimswap.io import read_image, to_tensor
from optimswap.registry import run_edit

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the official NVlabs .pkl layout, written here without NVlabs code ---------------------------------------------

NVLABS_CLASSES = {"Generator": "Generator", "Mapping": "MappingNetwork", "FullyConnected": "FullyConnectedLayer",
                  "Synthesis": "SynthesisNetwork", "SynthesisBlock": "SynthesisBlock",
                  "SynthesisLayer": "SynthesisLayer", "ToRGB": "ToRGBLayer"}


@pytest.fixture
def nvlabs_modules(monkeypatch):
    """Stand-ins for ``torch_utils.persistence`` and ``dnnlib.util`` so that pickle can name their globals."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # what NVlabs does: exec meta["module_src"]
        exec(meta["module_src"], {})

    class EasyDict(dict):
        pass

    _reconstruct_persistent_obj.__module__ = persistence.__name__
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    EasyDict.__module__, EasyDict.__qualname__ = util.__name__, "EasyDict"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj  # type: ignore[attr-defined]
    util.EasyDict = EasyDict  # type: ignore[attr-defined]
    for name, module in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                         ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, module)
    return persistence, util


class Persistent:
    """Pickles like an NVlabs ``@persistent_class`` object: reconstructor + metadata with source and state."""

    def __init__(self, reconstruct, class_name: str, state: dict, module_src: str):
        self.reconstruct, self.meta = reconstruct, dict(type="class", version=6, module_src=module_src,
                                                       class_name=f"training.networks.{class_name}", state=state)

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def as_persistent(module: nn.Module, reconstruct, module_src: str) -> Persistent:
    state = {"training": False, "_parameters": OrderedDict((k, nn.Parameter(v.clone(), requires_grad=False))
                                                           for k, v in module._parameters.items() if v is not None),
             "_buffers": OrderedDict((k, v.clone()) for k, v in module._buffers.items() if v is not None),
             "_non_persistent_buffers_set": set(),
             "_modules": OrderedDict((k, as_persistent(m, reconstruct, module_src))
                                     for k, m in module._modules.items() if m is not None)}
    if hasattr(module, "conv_clamp"):
        state["conv_clamp"] = module.conv_clamp
    if hasattr(module, "bias_gain"):
        state["bias_gain"] = module.bias_gain
    return Persistent(reconstruct, NVLABS_CLASSES[type(module).__name__], state, module_src)


def write_nvlabs_pkl(path: Path, g: Generator, modules, module_src: str = "raise SystemExit") -> Path:
    persistence, util = modules
    make = lambda: as_persistent(g, persistence._reconstruct_persistent_obj, module_src)
    content = {"G": make(), "D": None, "G_ema": make(), "augment_pipe": None,
               "training_set_kwargs": util.EasyDict(resolution=np.int64(32), use_labels=False)}
    path.write_bytes(pickle.dumps(content, protocol=3))
    return path


def to_rosinality(g: Generator) -> dict[str, torch.Tensor]:
    """The generator under rosinality/stylegan2-pytorch's names and shapes (the inverse of ``from_rosinality``)."""
    sd, out = g.state_dict(), {}
    for i in range(TINY.mapping_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    out["input.input"] = sd["synthesis.b4.const"][None]

    def layer(src, dst, noise_name=None):
        out[f"{src}.conv.weight"] = sd[f"{dst}.weight"][None]
        out[f"{src}.conv.modulation.weight"] = sd[f"{dst}.affine.weight"]
        out[f"{src}.conv.modulation.bias"] = sd[f"{dst}.affine.bias"]
        if noise_name is None:
            out[f"{src}.bias"] = sd[f"{dst}.bias"].reshape(1, -1, 1, 1)
        else:
            out[f"{src}.activate.bias"] = sd[f"{dst}.bias"]
            out[f"{src}.noise.weight"] = sd[f"{dst}.noise_strength"].reshape(1)
            out[f"noises.{noise_name}"] = sd[f"{dst}.noise_const"][None, None]

    layer("conv1", "synthesis.b4.conv1", "noise_0")
    layer("to_rgb1", "synthesis.b4.torgb")
    for i, res in enumerate((8, 16, 32)):
        layer(f"convs.{2 * i}", f"synthesis.b{res}.conv0", f"noise_{2 * i + 1}")
        layer(f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", f"noise_{2 * i + 2}")
        layer(f"to_rgbs.{i}", f"synthesis.b{res}.torgb")
    return out


def test_an_official_layout_pickle_loads_by_name_and_renders_the_same_without_running_its_source(
        tmp_path, nvlabs_modules):
    g = tiny_generator()
    marker = tmp_path / "ran"
    src = f"open({str(marker)!r}, 'w').write('module_src ran')"
    loaded = load_generator(write_nvlabs_pkl(tmp_path / "net.pkl", g, nvlabs_modules, module_src=src))
    assert not marker.exists()
    assert loaded.arch == TINY  # the architecture, read back from the weights
    z = torch.randn(2, TINY.z_dim, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(z), from_state_dict(g.state_dict())(z))
    assert torch.equal(loaded(z), g(z)) and torch.equal(loaded.w_avg, g.w_avg)


def test_a_rosinality_checkpoint_loads_likewise(tmp_path):
    g = tiny_generator(3)
    torch.save({"g_ema": to_rosinality(g), "latent_avg": g.w_avg.clone()}, tmp_path / "ros.pt")
    loaded = load_generator(tmp_path / "ros.pt")
    z = torch.randn(2, TINY.z_dim, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(loaded(z), g(z), atol=1e-5)  # g clamps at 256, rosinality never: same at these values
    assert torch.equal(loaded.w_avg, g.w_avg) and loaded.w_avg_source == "stored with the weights"


def test_a_rosinality_checkpoint_without_latent_avg_gets_its_mean_w_from_seeded_samples(tmp_path):
    """A bare g_ema state has no mean W: it is the mean of 4096 mapped z (seeded: every load the same), not zeros,
    so truncation renders as with the generator's true mean (here that of 20 000 other samples), and the run record
    says where it came from."""
    g = tiny_generator(3)
    torch.save({"g_ema": to_rosinality(g)}, tmp_path / "bare.pt")
    loaded, again = load_generator(tmp_path / "bare.pt"), load_generator(tmp_path / "bare.pt")
    assert torch.equal(loaded.w_avg, again.w_avg)
    with torch.no_grad():
        true_mean = g.mapping(torch.randn(20_000, TINY.z_dim, generator=torch.Generator().manual_seed(9))).mean(0)
        spread = float(g.mapping(torch.randn(1000, TINY.z_dim)).std(0).norm())
    assert float((loaded.w_avg - true_mean).norm()) < 0.05 * spread < float(true_mean.norm())  # zeros would not do
    z = torch.randn(4, TINY.z_dim, generator=torch.Generator().manual_seed(2))
    g.mapping.w_avg.copy_(true_mean)
    truncated = g(z, truncation=0.5)
    error = float((loaded(z, truncation=0.5) - truncated).abs().mean())
    again.mapping.w_avg.zero_()  # as such a file loaded before
    assert error < 0.1 * float((again(z, truncation=0.5) - truncated).abs().mean())  # measured: 0.005 vs 0.14
    assert "mean of 4096 mapped z (seed 0)" in loaded.w_avg_source
    save_generator(tmp_path / "saved.pt", loaded)  # a tuned copy keeps saying so
    assert load_generator(tmp_path / "saved.pt").w_avg_source == loaded.w_avg_source


class RunsSystem:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class RunsExec:
    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        import builtins
        return builtins.exec, (self.code,)


def test_malicious_pickles_are_refused_naming_the_global_and_nothing_runs(tmp_path):
    marker = tmp_path / "ran"
    cases = {"system": RunsSystem(f"touch {marker}"), "exec": RunsExec(f"open({str(marker)!r}, 'w')")}
    for name, payload in cases.items():
        path = tmp_path / f"{name}.pkl"
        path.write_bytes(pickle.dumps({"G_ema": payload}))
        with pytest.raises(UnsafeCheckpoint, match=rf"refused: the checkpoint asks for \S+\.{name}\b"):
            load_generator(path)
        torch.save({"g_ema": {"input.input": payload}}, tmp_path / f"{name}.pt")
        with pytest.raises(UnsafeCheckpoint, match="refused"):
            load_generator(tmp_path / f"{name}.pt")
    assert not marker.exists()


def test_a_missing_or_foreign_checkpoint_says_where_to_get_the_weights(tmp_path):
    with pytest.raises(BackendUnavailable, match="not found; get the official FFHQ ones from https://"):
        load_generator(tmp_path / "nope.pkl")
    (tmp_path / "x.pkl").write_bytes(pickle.dumps({"G_ema": {"a": 1}}))
    with pytest.raises(BackendUnavailable, match="no NVlabs G_ema"):
        load_generator(tmp_path / "x.pkl")


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).square().mean()))


@pytest.mark.parametrize(("preset", "iters"), [("default", 300), ("lbfgs", 100)])
def test_projecting_the_generators_own_image_in_w_plus_reaches_30_db(preset, iters):
    g = tiny_generator(5)
    with torch.no_grad():
        target = (g(torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(7))) + 1) / 2
    # The generator's own image carries its stored noise; the projection keeps that noise and fits W+.
    cfg = INVERT_PRESETS[preset].replace(size=32, iters=iters, w_avg_samples=2000, optimize_noise=False)
    fit = project(g, target, cfg)
    assert fit.latent.shape == (1, g.num_ws, TINY.w_dim)
    assert psnr(fit.image, target) >= 30, preset


def test_the_invert_edit_pastes_the_rendering_back_leaving_the_rest_of_the_photo_bit_exact(faces, tmp_path, device):
    g = tiny_generator(1)
    torch.save({"g_ema": to_rosinality(g), "latent_avg": g.w_avg.clone()}, tmp_path / "g.pt")
    photo = faces / "identities" / "jennifer" / "01.jpg"
    cfg = INVERT_PRESETS["default"].replace(generator=str(tmp_path / "g.pt"), size=32, iters=5, w_avg_samples=100,
                                            perceptual_weight=0.0, pti_steps=2, device=str(device))
    result = run_edit("invert", photo, {}, cfg, progress=False)
    source = read_image(photo)
    mask = warp_from_frame(result.frame.mask, result.frame.matrix, *source.shape[:2])[0, 0].cpu().numpy()
    outside = mask == 0
    assert outside.any() and (~outside).any()
    assert np.array_equal(result.image[outside], source[outside])
    assert not np.array_equal(result.image[~outside], source[~outside])
    assert result.latent.shape == (1, g.num_ws, TINY.w_dim) and len(result.noises) == len(g.noise_shapes())
    save_latent(tmp_path / "latent.pt", result.latent, result.noises)
    saved = torch.load(tmp_path / "latent.pt", weights_only=True)
    assert torch.equal(saved["latent"], result.latent.detach().cpu())


def test_the_frame_is_ffhqs_quad_crop_with_pils_pixel_convention(jennifer):
    lm = find_face(jennifer).landmarks
    quad = ffhq_quad(lm)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_to_eye, eye_to_mouth = eye_right - eye_left, (lm[48] + lm[54]) / 2 - (eye_left + eye_right) / 2
    sides = np.roll(quad, -1, axis=0) - quad
    side = max(4.0 * np.linalg.norm(eye_to_eye), 3.6 * np.linalg.norm(eye_to_mouth))
    assert np.allclose(np.linalg.norm(sides, axis=1), side) and abs(sides[0] @ sides[1]) < 1e-6 * side**2  # a square
    assert np.allclose(quad.mean(0), (eye_left + eye_right) / 2 + 0.1 * eye_to_mouth)
    # Its top edge runs along eye_to_eye minus eye_to_mouth turned by 90 degrees.
    top = quad[3] - quad[0]
    along = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    assert abs(top[0] * along[1] - top[1] * along[0]) < 1e-9 * side * np.linalg.norm(along) and top @ along > 0
    size = 64
    matrix = frame_matrix(lm, size)
    # NVlabs: img.transform(QUAD, (quad + 0.5).flatten(), BILINEAR) samples frame pixel (i, j), centre (i + 0.5,
    # j + 0.5) in PIL's continuous coordinates, at quad[0] + 0.5 + (i + 0.5) / size * (quad[3] - quad[0])
    # + (j + 0.5) / size * (quad[1] - quad[0]); minus 0.5 for pixel-centre photo coordinates.
    ij = np.array([[0, 0], [size - 1, 0], [0, size - 1], [17, 40]], dtype=float)
    pil = quad[0] + (ij[:, :1] + 0.5) / size * (quad[3] - quad[0]) + (ij[:, 1:] + 0.5) / size * (quad[1] - quad[0])
    inverse = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))[:2]
    assert np.allclose(apply_matrix(inverse, ij), pil)
    assert np.allclose(apply_matrix(matrix, pil), ij)  # and back
    # The frame resampled from the photo: its pixels are the photo's at those places.
    frame = warp_to_frame(to_tensor(jennifer).double(), matrix, size)[0].permute(1, 2, 0).numpy()
    x, y = pil[3]
    x0, y0 = int(x), int(y)
    fx, fy = x - x0, y - y0
    pixels = jennifer.astype(float) / 255
    bilinear = ((1 - fx) * (1 - fy) * pixels[y0, x0] + fx * (1 - fy) * pixels[y0, x0 + 1]
                + (1 - fx) * fy * pixels[y0 + 1, x0] + fx * fy * pixels[y0 + 1, x0 + 1])
    assert np.allclose(frame[40, 17], bilinear, atol=1e-6)


def test_sefa_equals_an_independent_eigendecomposition():
    g = tiny_generator(2)
    vectors, values = sefa(g, k=4)
    rows = [m.affine.weight for b in g.synthesis.blocks() for m in (*b.layers(), b.torgb)]
    a = np.concatenate([r.numpy() for r in rows]).astype(np.float64)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    _, s, vt = np.linalg.svd(a)  # right singular vectors of A = eigenvectors of A^T A
    assert np.allclose(values.numpy(), s[:4] ** 2, rtol=1e-4)
    assert np.allclose(np.abs((vectors.numpy() * vt[:4]).sum(1)), 1, atol=1e-4)


def test_a_fitted_direction_recovers_a_planted_one_and_editing_along_it_moves_the_scorer_monotonically():
    g = tiny_generator(4)
    planted = torch.randn(TINY.w_dim, generator=torch.Generator().manual_seed(9))
    planted /= planted.norm()
    w, _ = sample_and_score(g, lambda img: img.mean(dim=(1, 2, 3)), 600)
    labels = (w - w.mean(0)) @ planted > 0
    assert float(fit_direction(w, labels) @ planted) >= 0.9
    # An offline scorer on the images (red minus blue), the classes its top and bottom thirds.
    scorer = lambda img: (img[:, 0] - img[:, 2]).mean(dim=(1, 2))
    direction = fit_from_scorer(g, scorer, n=600)
    start = g.mapping(torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(11)))
    with torch.no_grad():
        scores = [float(scorer((g.synthesis(edit_latent(start, [(direction, s)])[:, None].expand(-1, g.num_ws, -1))
                                + 1) / 2)) for s in np.linspace(-2, 2, 9)]
    assert all(b > a for a, b in zip(scores, scores[1:], strict=False)), scores
    # Conditioned on the planted direction, the edit has no component along it.
    assert abs(float(conditional(direction, planted) @ planted)) < 1e-5


def test_external_direction_files_load_from_npy_and_pt(tmp_path):
    d = np.arange(1, TINY.w_dim + 1, dtype=np.float32)
    np.save(tmp_path / "d.npy", d[None])
    torch.save(torch.from_numpy(d), tmp_path / "d.pt")
    a, b = load_direction(tmp_path / "d.npy"), load_direction(tmp_path / "d.pt")
    assert torch.allclose(a, b) and abs(float(a.norm()) - 1) < 1e-6


def jennifer_frame(jennifer: np.ndarray, size: int = 32) -> torch.Tensor:
    """A real face in FFHQ's crop: an image no tiny random generator draws exactly."""
    return warp_to_frame(to_tensor(jennifer), frame_matrix(find_face(jennifer).landmarks, size), size)


def test_pivotal_tuning_raises_the_reconstruction_psnr_and_its_locality_term_keeps_far_latents(jennifer):
    g = tiny_generator(5)
    target = jennifer_frame(jennifer)
    cfg = INVERT_PRESETS["default"].replace(size=32, iters=150, w_avg_samples=500, perceptual_weight=0.0,
                                            optimize_noise=False)
    fit = project(g, target, cfg)
    tuned = {loc: project(g, target, cfg.replace(pti_steps=150, pti_lr=3e-3, pti_locality=loc, pti_distance=2.0))
             for loc in (0.0, 1.0)}
    assert psnr(tuned[0.0].image, target) > psnr(fit.image, target) + 2
    assert psnr(tuned[1.0].image, target) > psnr(fit.image, target) + 1
    assert all(torch.equal(t.latent, fit.latent) for t in tuned.values())  # the pivot is the fit, untouched
    assert not any(p.requires_grad for p in g.parameters())  # the loaded generator is left as it was
    # A latent the tuning never saw, at the locality's distance from the pivot towards another mapped one.
    w = g.mapping(torch.randn(1, TINY.z_dim, generator=torch.Generator().manual_seed(99)))[:, None]
    far = fit.latent + 2.0 * (w - fit.latent) / (w - fit.latent).norm(dim=-1, keepdim=True)
    with torch.no_grad():
        drift = {loc: float((t.generator.synthesis(far) - g.synthesis(far)).square().mean())
                 for loc, t in tuned.items()}
    assert drift[1.0] < 0.3 * drift[0.0], drift


def test_moves_come_from_named_direction_files_and_are_checked(tmp_path):
    named = {"smile": torch.eye(TINY.w_dim)[0], "yaw": torch.eye(TINY.w_dim)[1] + torch.eye(TINY.w_dim)[0]}
    save_directions(tmp_path / "dirs.pt", named, {"method": "test"})
    np.save(tmp_path / "age.npy", 3 * np.eye(TINY.w_dim, dtype=np.float32)[2][None])
    moves = resolve_moves(["smile=+2"], [f"{tmp_path / 'age.npy'}=-1.5"], str(tmp_path / "dirs.pt"), [], TINY.w_dim)
    assert [(m.name, m.strength) for m in moves] == [("smile", 2.0), ("age.npy", -1.5)]
    assert torch.equal(moves[1].direction, torch.eye(TINY.w_dim)[2])
    latent = torch.zeros(1, 8, TINY.w_dim)
    moved = edit_latent(latent, [(m.direction, m.strength) for m in moves])
    assert torch.equal(moved[0, 3, :3], torch.tensor([2.0, 0.0, -1.5]))
    # Keeping yaw: the smile move loses its component along yaw.
    kept = resolve_moves(["smile=1"], [], str(tmp_path / "dirs.pt"), ["yaw"], TINY.w_dim)[0].direction
    assert abs(float(kept @ named["yaw"])) < 1e-6
    errors = {
        "expected NAME=STRENGTH": (["smile"], [], "dirs.pt", []),
        r"named attributes \(smile\) need a file of named directions":
            (["smile=1"], [], "", []),
        "has no direction 'frown'": (["frown=1"], [], "dirs.pt", []),
        "direction file .*nope.npy not found": ([], ["nope.npy=1"], "", []),
    }
    for message, (attr, direction, directions, keep) in errors.items():
        with pytest.raises(OptionError, match=message):
            resolve_moves(attr, [str(tmp_path / d) for d in direction],
                          str(tmp_path / directions) if directions else "", keep, TINY.w_dim)
    with pytest.raises(OptionError, match="the generator's W has 64"):
        resolve_moves(["smile=1"], [], str(tmp_path / "dirs.pt"), [], 64)


def face_of(faces: Path, name: str) -> torch.Tensor:
    return to_tensor(read_image(faces / "identities" / name))


def test_landmark_scorers_on_real_photos(faces):
    score = landmark_scorer(["smile", "yaw", "eyes_open"])
    talking, closed = score(face_of(faces, "mark/05.jpg"))[0], score(face_of(faces, "mark/02.jpg"))[0]
    assert talking[0] > 0.25 and closed[0] < 0.05  # mouth open vs closed
    turned = face_of(faces, "angelina/03.jpg")
    yaw, mirrored = float(score(turned)[0, 1]), float(score(turned.flip(-1))[0, 1])
    assert yaw < -10 and abs(yaw + mirrored) < 3  # turned towards image left; the mirror image the other way
    assert 0.25 < float(closed[2]) < 0.45  # eyes open
    assert torch.isnan(score(torch.full((1, 3, 64, 64), 0.5))).all()  # no face: no score
    lm = find_face(read_image(faces / "identities" / "mark" / "02.jpg")).landmarks
    closing = lm.copy()
    for upper, lower in ((37, 41), (38, 40), (43, 47), (44, 46)):  # lids halfway together
        middle = (lm[upper] + lm[lower]) / 2
        closing[upper], closing[lower] = (lm[upper] + middle) / 2, (lm[lower] + middle) / 2
    assert abs(eye_aspect(closing) - eye_aspect(lm) / 2) < 1e-9


def test_a_fit_skips_unscored_images_and_needs_enough_scored_ones():
    g = tiny_generator(4)
    planted = torch.randn(TINY.w_dim, generator=torch.Generator().manual_seed(9))
    planted /= planted.norm()
    w = g.mapping(torch.randn(1200, TINY.z_dim, generator=torch.Generator().manual_seed(3)))
    scores = (w - w.mean(0)) @ planted
    scores[::2] = float("nan")  # no face in every other image
    assert float(fit_from_scores(w, scores) @ planted) >= 0.9
    scores[MIN_SCORED - 1:] = float("nan")
    with pytest.raises(OptimswapError, match="could be scored"):
        fit_from_scores(w, scores)
