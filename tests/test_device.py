"""Device hazards found without a GPU: every edit's objective evaluated (forward and backward) with its image and
prepared targets on PyTorch's ``meta`` device, where an operation that meets a tensor made on the CPU inside the
evaluation fails, as it would on CUDA. The models' own devices are checked separately: a convolution with a CPU
weight accepts a meta input.

What cannot run on meta is done on the CPU first: the refresh (the patch losses' nearest-neighbour search reads
bounding boxes and match indices from the data) and the objective's preparation (face landmarks, warps, principal
components). The CUDA runs of the same steps are the device fixture's tests (``pytest -m cuda``)."""

from __future__ import annotations

import copy
import types

import pytest
import torch
from tiny_gan import tiny_checkpoint
from torch import nn

from optimswap.features import load_encoder
from optimswap.gan import load_generator
from optimswap.io import list_images
from optimswap.lighting.net import load_lighting_net
from optimswap.registry import get_edit, run_edit

META = torch.device("meta")


def to_meta(obj, memo: dict[int, tuple[object, object]]):
    """``obj`` with every tensor it holds (attributes, containers, modules' parameters and buffers) moved to meta,
    in place where it can be; a tensor held in several places stays one tensor. ``memo``: id -> (the object, kept
    alive so that its id is not reused; what it became)."""
    if id(obj) in memo:
        return memo[id(obj)][1]
    if isinstance(obj, torch.Tensor):
        moved = obj.detach().to(META)
        memo[id(obj)] = (obj, moved)
        return moved
    memo[id(obj)] = (obj, obj)
    if isinstance(obj, (types.FunctionType, types.MethodType, type)):
        return obj
    if isinstance(obj, nn.Module):
        obj.to(META)
    if isinstance(obj, dict):
        for key, value in obj.items():
            obj[key] = to_meta(value, memo)
    elif isinstance(obj, list):
        obj[:] = [to_meta(value, memo) for value in obj]
    elif isinstance(obj, tuple):
        items = [to_meta(value, memo) for value in obj]
        moved = type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)
        memo[id(obj)] = (obj, moved)
        return moved
    elif hasattr(obj, "__dict__"):
        for key, value in list(vars(obj).items()):
            object.__setattr__(obj, key, to_meta(value, memo))
    return obj


class MetaProbe:
    """A solver that, instead of solving, evaluates the level's objective once on the CPU (which refreshes it),
    then a copy of it and of the parameterization on meta, forward and backward; it records the terms and the
    gradients' devices and shapes."""

    def __init__(self):
        self.recoveries: list[dict] = []
        self.levels: list[dict] = []

    def run(self, params, render, objective, iters, desc="", progress=True) -> list[dict]:
        objective(render())  # the refresh, on the CPU
        parameterization = render.__self__
        memo: dict[int, tuple[object, object]] = {}
        objective, parameterization, params = to_meta(copy.deepcopy((objective, parameterization, params)), memo)
        assert objective.encoder is None or {p.device for p in objective.encoder.parameters()} == {META}
        for p in params:
            p.requires_grad_(True)
        total, parts = objective(parameterization.render())
        total.backward()
        self.levels.append({"terms": sorted(parts), "total": total.device,
                            "grads": [(p.grad.device, p.grad.shape == p.shape) for p in params]})
        return []


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("gan") / "g.pt")


def edit_cases(faces, generator_file):
    """Each edit at a small size with every term it has taking part."""
    ids, styles, makeup = faces / "identities", faces / "styles", faces / "makeup"
    return {
        "swap": (ids / "jennifer" / "01.jpg", {"target": list_images(ids / "angelina")[:2]},
                 dict(size=64, levels=1, iters=1, n_targets=2, landmark_tolerance=0.0, match_detail=False,
                      keep_occluders=False)),
        "makeup": (makeup / "plain" / "01.jpg", {"reference": makeup / "makeup" / "01.jpg"},
                   dict(size=64, levels=1, iters=1, histogram_weight=1.0)),
        "stylize": (ids / "jennifer" / "01.jpg", {"style": styles / "01.jpg"}, dict(size=64, levels=1, iters=1)),
        "invert": (ids / "jennifer" / "01.jpg", {},
                   dict(generator=str(generator_file), size=32, iters=1, w_avg_samples=10)),
    }


@pytest.mark.parametrize("edit", ["swap", "makeup", "stylize", "invert"])
def test_each_objective_evaluates_on_meta_with_no_tensor_made_on_the_cpu(edit, faces, generator_file, one_thread):
    source, inputs, options = edit_cases(faces, generator_file)[edit]
    cfg = get_edit(edit).preset().replace(device="cpu", **options)
    probe = MetaProbe()
    run_edit(edit, source, inputs, cfg, solver=probe, progress=False)
    assert len(probe.levels) == 1
    level = probe.levels[0]
    assert level["total"] == META and level["grads"] and all(g == (META, True) for g in level["grads"])
    expected = {"swap": {"content", "lighting", "style_relu3_1", "tv"}, "makeup": {"histogram_lips", "spatial_lips"},
                "stylize": {"gram_relu3_1", "identity", "shading", "style_relu3_1"},
                "invert": {"noise_reg", "pixel", "vgg_relu3_3"}}[edit]
    assert expected <= set(level["terms"])  # the terms that matter did take part


def test_the_models_move_whole_to_a_device(generator_file):
    """Encoder, lighting network and generator with every parameter and buffer on the device asked for."""
    for model in (load_encoder("vgg16-hed", META), load_lighting_net(META), load_generator(generator_file, META)):
        assert {t.device for t in [*model.parameters(), *model.buffers()]} == {META}
