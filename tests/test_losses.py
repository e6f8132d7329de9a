import pytest
import torch
import torch.nn.functional as F

from optimswap.losses import (
    GramLoss,
    LuminanceLoss,
    PatchStyleLoss,
    WindowSearch,
    content_loss,
    gram_loss,
    gram_matrix,
    nearest_patches,
    nearest_patches_global,
    principal_projection,
    project,
    target_rows,
    tv_loss,
    vote,
)
from optimswap.losses.patch import _mean3


def explicit_patch_loss(x, targets, m, weight):
    """sum_p w(p) |patch_x(p) - patch_t(p + d_p)|^2 written with unfold (zero padding)."""
    k, c, h, w = targets.shape
    px = F.unfold(x, 3, padding=1).reshape(c * 9, h, w)
    pt = F.unfold(targets, 3, padding=1).reshape(k, c * 9, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    chosen = pt[m.k, :, ys + m.dy, xs + m.dx].permute(2, 0, 1)
    return ((weight * m.found) * ((px - chosen) ** 2).sum(0)).sum()


def test_planted_match_is_found():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 8, 12, 12, generator=g)
    targets = torch.randn(3, 8, 12, 12, generator=g)
    targets[2] = torch.roll(x[0], shifts=(1, -2), dims=(1, 2))  # x's patch at p sits at p + (1, -2) in target 2
    m = nearest_patches(x, targets, torch.ones(3, 1, 12, 12), radius=2)
    inner = (slice(2, 9), slice(3, 9))  # positions whose shifted 3x3 patch is fully inside
    assert (m.k[inner] == 2).all()
    assert (m.dy[inner] == 1).all() and (m.dx[inner] == -2).all()
    assert torch.allclose(m.score[inner], torch.ones_like(m.score[inner]), atol=1e-4)


@pytest.mark.parametrize("radius", [1, 2])
def test_restricted_search_stays_in_window(radius):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 16, 16, generator=g)
    targets = torch.randn(2, 4, 16, 16, generator=g)
    # A perfect copy of every patch far outside the window must be ignored.
    targets[1] = torch.roll(x[0], shifts=(radius + 3, 0), dims=(1, 2))
    m = nearest_patches(x, targets, torch.ones(2, 1, 16, 16), radius=radius)
    assert m.dy.abs().max() <= radius and m.dx.abs().max() <= radius
    assert m.score[m.found].max() < 0.99


def test_invalid_target_cells_are_never_matched():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 4, 10, 10, generator=g)
    targets = x.repeat(2, 1, 1, 1) + 0.01 * torch.randn(2, 4, 10, 10, generator=g)
    valid = torch.ones(2, 1, 10, 10)
    valid[0] = 0  # target 0 is a perfect match but entirely outside its photo
    m = nearest_patches(x, targets, valid, radius=1)
    assert (m.k[m.found] == 1).all()


def test_voted_loss_equals_explicit_patch_loss_and_gradient(device):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 5, 9, 9, generator=g, dtype=torch.float64).to(device)
    targets = torch.randn(3, 5, 9, 9, generator=g, dtype=torch.float64).to(device)
    weight = torch.rand(9, 9, generator=g, dtype=torch.float64).to(device)
    m = nearest_patches(x.float(), targets.float(), torch.ones(3, 1, 9, 9, device=device), radius=1)
    voted = vote(target_rows(targets), m, weight)
    y = x.clone().requires_grad_(True)
    fast = voted.loss(y)
    z = x.clone().requires_grad_(True)
    slow = explicit_patch_loss(z, targets, m, weight)
    assert torch.allclose(fast, slow, rtol=1e-9)
    (gf,) = torch.autograd.grad(fast, y)
    (gs,) = torch.autograd.grad(slow, z)
    assert torch.allclose(gf, gs, rtol=1e-9, atol=1e-12)


def test_patch_loss_gradcheck_and_zero_at_target(device):
    g = torch.Generator().manual_seed(4)
    targets = torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64).to(device)
    ones = torch.ones(2, 1, 6, 6, dtype=torch.float64, device=device)
    loss = PatchStyleLoss(targets, ones, ones[0, 0], 1, 1.0)
    x = torch.randn(1, 3, 6, 6, generator=g, dtype=torch.float64).to(device).requires_grad_()
    loss.refresh(x)
    assert torch.autograd.gradcheck(loss, (x,))
    same = targets[1:2].clone()
    loss.refresh(same)
    assert loss(same).item() == pytest.approx(0.0, abs=1e-10)


def test_content_and_tv_gradcheck(device):
    g = torch.Generator().manual_seed(5)
    a = torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64).to(device).requires_grad_()
    b = torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64).to(device)
    assert torch.autograd.gradcheck(lambda t: content_loss(t, b), (a,))
    assert torch.autograd.gradcheck(tv_loss, (a,))
    assert content_loss(b, b).item() == 0.0
    assert tv_loss(torch.ones(1, 3, 5, 5, device=device)).item() == 0.0


def test_shape_errors():
    with pytest.raises(ValueError):
        nearest_patches(torch.zeros(1, 3, 4, 4), torch.zeros(2, 4, 4, 4), torch.ones(2, 1, 4, 4), 1)
    with pytest.raises(ValueError):
        content_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError):
        tv_loss(torch.zeros(3, 4, 4))


def test_principal_projection_keeps_the_requested_energy():
    g = torch.Generator().manual_seed(5)
    # Rank-3 features in 16 channels plus faint noise: 3 directions carry nearly all the energy.
    targets = torch.einsum("cr,krhw->kchw", torch.randn(16, 3, generator=g), torch.randn(2, 3, 8, 8, generator=g))
    targets = targets + 1e-3 * torch.randn(targets.shape, generator=g)
    valid = torch.ones(2, 1, 8, 8)
    basis = principal_projection(targets, valid, 0.999)
    assert basis.shape == (16, 3)
    assert torch.allclose(basis.T @ basis, torch.eye(3), atol=1e-5)
    kept = project(targets, basis).square().sum() / targets.square().sum()
    assert kept > 0.999
    assert principal_projection(targets, valid, 1.0) is None
    with pytest.raises(ValueError):
        principal_projection(targets, valid, 0.0)


def test_projected_search_finds_the_planted_match():
    g = torch.Generator().manual_seed(6)
    mix = torch.randn(32, 6, generator=g)
    x = torch.einsum("cr,brhw->bchw", mix, torch.randn(1, 6, 12, 12, generator=g)).relu()
    targets = torch.einsum("cr,krhw->kchw", mix, torch.randn(3, 6, 12, 12, generator=g)).relu()
    targets[1] = torch.roll(x[0], shifts=(-1, 2), dims=(1, 2))
    loss = PatchStyleLoss(targets, torch.ones(3, 1, 12, 12), torch.ones(12, 12), radius=2, scale=1.0,
                          search_energy=0.95)
    assert loss.basis is not None and loss.basis.shape[1] < 32
    m = loss.refresh(x)
    inner = (slice(2, 9), slice(1, 8))
    assert (m.k[inner] == 1).all() and (m.dy[inner] == -1).all() and (m.dx[inner] == 2).all()


def brute_force_global(x, targets, valid, region=None, radius=None):
    """CNNMRF search written out: for every inner position (in ``region``), the NCC of its 3x3 patch with every inner
    target patch whose 9 cells are all valid (within ``radius`` cells if given), in every target; returns
    {(y, x): (score, k, dy, dx)}."""
    k_n, _, h, w = targets.shape
    candidates = []
    for k in range(k_n):
        for ty in range(1, h - 1):
            for tx in range(1, w - 1):
                if (valid[k, 0, ty - 1 : ty + 2, tx - 1 : tx + 2] == 1).all():
                    candidates.append((k, ty, tx, targets[k, :, ty - 1 : ty + 2, tx - 1 : tx + 2].reshape(-1)))
    best = {}
    for y in range(1, h - 1):
        for x_ in range(1, w - 1):
            if region is not None and not region[y, x_]:
                continue
            patch = x[0, :, y - 1 : y + 2, x_ - 1 : x_ + 2].reshape(-1)
            for k, ty, tx, t in candidates:
                if radius is not None and max(abs(ty - y), abs(tx - x_)) > radius:
                    continue
                ncc = float(patch @ t / (patch.norm() * t.norm()))
                if (y, x_) not in best or ncc > best[(y, x_)][0]:
                    best[(y, x_)] = (ncc, k, ty - y, tx - x_)
    return best


@pytest.mark.parametrize("chunk", [2**22, 1, 500])
def test_global_search_equals_brute_force(chunk):
    """Every target, every valid whole patch, border positions excluded; the chunked product changes nothing."""
    g = torch.Generator().manual_seed(7)
    h, w = 9, 11  # not square, so that rows and columns cannot be swapped unnoticed
    x = torch.randn(1, 5, h, w, generator=g, dtype=torch.float64)
    targets = torch.randn(3, 5, h, w, generator=g, dtype=torch.float64)
    valid = (torch.rand(3, 1, h, w, generator=g) > 0.15).double()
    valid[2] = 1.0
    region = torch.rand(h, w, generator=g) > 0.3
    for reg in (None, region):
        m = nearest_patches_global(x, targets, valid, reg, chunk=chunk)
        expected = brute_force_global(x, targets, valid, reg)
        assert {(int(y), int(x_)) for y, x_ in m.found.nonzero()} == set(expected)
        for (y, x_), (score, k, dy, dx) in expected.items():
            assert (int(m.k[y, x_]), int(m.dy[y, x_]), int(m.dx[y, x_])) == (k, dy, dx), (y, x_)
            assert float(m.score[y, x_]) == pytest.approx(score, abs=1e-6)


def test_global_search_finds_a_planted_shifted_copy():
    g = torch.Generator().manual_seed(8)
    h, w = 12, 13
    x = torch.randn(1, 6, h, w, generator=g, dtype=torch.float64)
    targets = torch.randn(3, 6, h, w, generator=g, dtype=torch.float64)
    targets[1] = torch.roll(x[0], shifts=(2, -3), dims=(1, 2))  # x's patch at p sits at p + (2, -3) in target 1
    m = nearest_patches_global(x, targets, torch.ones(3, 1, h, w, dtype=torch.float64))
    inner = (slice(1, h - 3), slice(4, w - 1))  # positions whose shifted patch is an inner target patch
    assert (m.k[inner] == 1).all()
    assert (m.dy[inner] == 2).all() and (m.dx[inner] == -3).all()
    assert torch.allclose(m.score[inner].double(), torch.ones(h - 4, w - 5, dtype=torch.float64), atol=1e-6)
    assert m.score[m.found].max() <= 1 + 1e-6


def test_global_search_region_limits_positions():
    g = torch.Generator().manual_seed(9)
    x = torch.randn(1, 4, 10, 10, generator=g, dtype=torch.float64)
    targets = torch.randn(2, 4, 10, 10, generator=g, dtype=torch.float64)
    valid = torch.ones(2, 1, 10, 10, dtype=torch.float64)
    region = torch.zeros(10, 10, dtype=torch.bool)
    region[0:5, 3:8] = True  # reaches the border row, which is never matched
    everywhere = nearest_patches_global(x, targets, valid)
    limited = nearest_patches_global(x, targets, valid, region)
    inner_region = region.clone()
    inner_region[0, :] = False
    assert torch.equal(limited.found, inner_region)
    for name in ("k", "dy", "dx", "score"):
        assert torch.equal(getattr(limited, name)[inner_region], getattr(everywhere, name)[inner_region]), name


def test_global_search_never_chooses_an_invalid_patch():
    """Target 0 is an exact copy of x but partly invalid: used where its patch is wholly valid, never elsewhere."""
    g = torch.Generator().manual_seed(10)
    h, w = 10, 12
    x = torch.randn(1, 4, h, w, generator=g, dtype=torch.float64)
    targets = torch.cat([x, torch.randn(2, 4, h, w, generator=g, dtype=torch.float64)])
    valid = (torch.rand(3, 1, h, w, generator=g) > 0.1).double()
    valid[0, :, 3:7, 4:9] = 0  # a hole in the perfect copy
    m = nearest_patches_global(x, targets, valid)
    ys, xs = m.found.nonzero().unbind(1)
    assert len(ys) == (h - 2) * (w - 2)
    for y, x_, k, dy, dx in zip(ys, xs, m.k[ys, xs], m.dy[ys, xs], m.dx[ys, xs], strict=True):
        ty, tx = int(y + dy), int(x_ + dx)
        assert 1 <= ty < h - 1 and 1 <= tx < w - 1
        assert (valid[k, 0, ty - 1 : ty + 2, tx - 1 : tx + 2] == 1).all(), (int(y), int(x_))
    copy_valid = F.avg_pool2d(valid[0:1], 3, stride=1)[0, 0] == 1  # whole-patch validity of target 0, inner cells
    exact = torch.zeros(h, w, dtype=torch.bool)
    exact[1:-1, 1:-1] = copy_valid
    assert (m.k[exact] == 0).all() and (m.dy[exact] == 0).all() and (m.dx[exact] == 0).all()
    copied = (m.k == 0) & (m.dy == 0) & (m.dx == 0)
    assert not copied[~exact & m.found].any()  # where the copy's patch touches the hole, something else is chosen


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_mean_is_avg_pool_to_the_bit(dtype):
    g = torch.Generator().manual_seed(11)
    for shape in [(1, 1, 5, 7), (8, 1, 31, 20), (3, 1, 64, 65)]:
        x = (100 * torch.rand(shape, generator=g)).to(dtype)
        assert torch.equal(_mean3(x), F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True))


def test_window_search_equals_brute_force_and_can_be_repeated(device):
    """The restricted search with its targets prepared once: the written-out search within the window, for every
    image searched against them."""
    g = torch.Generator().manual_seed(12)
    h, w, radius = 11, 9, 2
    targets = torch.randn(3, 5, h, w, generator=g, dtype=torch.float64)
    valid = (torch.rand(3, 1, h, w, generator=g) > 0.15).double()
    region = torch.zeros(h, w, dtype=torch.bool)
    region[2:8, 1:6] = torch.rand(6, 5, generator=g) > 0.2
    search = WindowSearch(targets.to(device), valid.to(device), radius, region.to(device))
    for _ in range(2):
        x = torch.randn(1, 5, h, w, generator=g, dtype=torch.float64)
        m = search(x.to(device))
        expected = brute_force_global(x, targets, valid, region, radius)
        assert {(int(y), int(x_)) for y, x_ in m.found.nonzero()} == set(expected)
        for (y, x_), (score, k, dy, dx) in expected.items():
            assert (int(m.k[y, x_]), int(m.dy[y, x_]), int(m.dx[y, x_])) == (k, dy, dx), (y, x_)
            assert float(m.score[y, x_]) == pytest.approx(score, abs=1e-6)


def test_window_search_rejects_a_radius_its_offset_index_cannot_hold():
    targets, valid = torch.rand(1, 2, 8, 8), torch.ones(1, 1, 8, 8)
    WindowSearch(targets, valid, 90)
    with pytest.raises(ValueError, match="radius 91 is too large"):
        WindowSearch(targets, valid, 91)


def test_window_search_in_groups_of_targets_is_the_same_to_the_bit(monkeypatch):
    g = torch.Generator().manual_seed(14)
    targets, x = torch.rand(5, 12, 20, 18, generator=g), torch.rand(1, 12, 20, 18, generator=g)
    valid, region = torch.ones(5, 1, 20, 18), torch.rand(20, 18, generator=g) > 0.2
    whole = WindowSearch(targets, valid, 2, region)(x)
    monkeypatch.setattr(WindowSearch, "PRODUCT", 2 * 12 * 20 * 18)  # targets two at a time
    grouped = WindowSearch(targets, valid, 2, region)(x)
    for name in ("k", "dy", "dx", "found", "score"):
        assert torch.equal(getattr(grouped, name), getattr(whole, name)), name


def whole_map_vote(targets, m, weight):
    """The vote over every position of the map, as it was written before it was cropped: (A, W, constant)."""
    k_n, c, h, w = targets.shape
    flat = targets.permute(1, 0, 2, 3).reshape(c, -1)
    wp = weight.to(targets.dtype) * m.found
    acc, acc_sq, total = targets.new_zeros(c, h * w), targets.new_zeros(h * w), targets.new_zeros(h * w)
    qy, qx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for uy in (-1, 0, 1):
        for ux in (-1, 0, 1):
            py, px = qy - uy, qx - ux
            inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
            pyc, pxc = py.clamp(0, h - 1), px.clamp(0, w - 1)
            wv = torch.where(inside, wp[pyc, pxc], torch.zeros_like(wp)).reshape(-1)
            ty, tx = (qy + m.dy[pyc, pxc]).clamp(0, h - 1), (qx + m.dx[pyc, pxc]).clamp(0, w - 1)
            vals = flat[:, (m.k[pyc, pxc] * h + ty) * w + tx].reshape(c, -1)
            acc += vals * wv
            acc_sq += (vals**2).sum(0) * wv
            total += wv
    mean = acc / total.clamp_min(1e-8)
    return mean.reshape(1, c, h, w), total.reshape(1, 1, h, w), (acc_sq - (mean**2).sum(0) * total).sum()


@pytest.mark.parametrize("h, w, c, box", [(23, 19, 6, (5, 15, 4, 12)), (16, 16, 64, (3, 12, 2, 11)),
                                           (32, 24, 128, (4, 29, 3, 20))])
def test_cropped_vote_and_loss_are_the_whole_map_ones(h, w, c, box):
    """Vote and loss computed on the crop around the weighted patches only: the same mean and weight to the bit, and
    the same constant, loss value and gradient (to rounding: they are summed over the crop), as over the whole
    map."""
    g = torch.Generator().manual_seed(13)
    targets = torch.rand(4, c, h, w, generator=g)
    weight = torch.zeros(h, w)
    y0, y1, x0, x1 = box
    weight[y0:y1, x0:x1] = torch.rand(y1 - y0, x1 - x0, generator=g)
    m = nearest_patches(torch.rand(1, c, h, w, generator=g), targets, torch.ones(4, 1, h, w), 2, weight > 0)
    mean, vote_weight, constant = whole_map_vote(targets, m, weight)
    voted = vote(target_rows(targets), m, weight)
    assert voted.mean[0, 0].numel() < mean[0, 0].numel()  # a proper crop
    for cropped, whole in ((voted.mean, mean), (voted.weight, vote_weight)):
        assert torch.equal(cropped, whole[:, :, voted.crop[0], voted.crop[1]])
        outside = torch.ones_like(whole, dtype=torch.bool)
        outside[:, :, voted.crop[0], voted.crop[1]] = False
        assert (whole[outside] == 0).all()
    assert torch.allclose(voted.constant, constant, rtol=1e-5)
    x = torch.rand(1, c, h, w, generator=g, requires_grad=True)
    fast, slow = voted.loss(x), (vote_weight * (x - mean) ** 2).sum() + constant
    assert torch.allclose(fast, slow, rtol=1e-5)
    assert torch.allclose(*(torch.autograd.grad(loss, x)[0] for loss in (fast, slow)), rtol=1e-6, atol=1e-7)


def test_luminance_loss_ignores_the_tone_and_changes_lightness_not_hue():
    """The standardised low-frequency shading: zero for the same shading at another tone and contrast, positive for
    shading moved elsewhere; its gradient moves R, G and B together (CIELAB L, mostly green, tinted dark hair
    purple and lit skin green); gradcheck."""
    g = torch.Generator().manual_seed(5)
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    shade = torch.exp(-((ys - 12) ** 2 + (xs - 14) ** 2) / 40.0)
    colour = torch.tensor([0.8, 0.6, 0.5]).view(1, 3, 1, 1)
    reference = (0.2 + 0.6 * shade) * colour
    weight = torch.ones(1, 1, 32, 32)
    loss = LuminanceLoss(reference, 1.5, weight)
    assert float(loss((0.1 + 0.3 * shade) * colour)) < 1e-6  # darker, flatter paper: the same shading
    moved = torch.exp(-((ys - 20) ** 2 + (xs - 18) ** 2) / 40.0)
    assert float(loss((0.2 + 0.6 * moved) * colour)) > 0.5
    image = (reference + 0.05 * torch.rand(reference.shape, generator=g)).requires_grad_()
    loss(image).backward()
    grad = image.grad[0]
    assert torch.allclose(grad[0], grad[1]) and torch.allclose(grad[1], grad[2])
    small = (reference[..., :12, :12] + 0.05 * torch.rand(1, 3, 12, 12, generator=g)).double().requires_grad_()
    small_loss = LuminanceLoss(reference[..., :12, :12].double(), 1.0, weight[..., :12, :12].double())
    assert torch.autograd.gradcheck(small_loss, (small,), eps=1e-6, atol=1e-5)


def test_gram_loss_gradcheck_zero_at_target_and_blind_outside_the_mask(device):
    g = torch.Generator().manual_seed(3)
    target = torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64).to(device)
    mask = torch.zeros(1, 1, 6, 6, dtype=torch.float64, device=device)
    mask[..., 1:5, 2:6] = 1
    loss = GramLoss(target, mask)
    x = torch.randn(1, 4, 6, 6, generator=g, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(loss, (x,))
    # The Gram matrix forgets where things are: the target's masked positions shuffled cost nothing.
    inside = target[..., 1:5, 2:6].flatten(2)
    shuffled = target.clone()
    shuffled[..., 1:5, 2:6] = inside[..., torch.randperm(16, generator=g).to(device)].reshape(1, 4, 4, 4)
    assert loss(shuffled).item() < 1e-20
    outside = shuffled.clone()
    outside[..., 0, :] = 100
    assert loss(outside).item() < 1e-20
    assert loss(x).item() > 0.1


def test_gram_loss_moves_the_mix_of_features_which_the_nearest_patch_loss_leaves():
    # Target region: half the positions feature a, half b. An input of all a has a close target patch everywhere
    # (the patch loss is content), but the wrong mix; descending the Gram loss brings b back in.
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    target = torch.stack([a] * 8 + [b] * 8, 1).reshape(1, 2, 4, 4)
    mask = torch.ones(1, 1, 4, 4)
    x = (torch.stack([a] * 16, 1).reshape(1, 2, 4, 4) + 0.01 * torch.rand(1, 2, 4, 4)).requires_grad_()
    loss = GramLoss(target, mask)
    start = loss(x).item()
    opt = torch.optim.Adam([x], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss(x).backward()
        opt.step()
    assert loss(x).item() < 0.05 * start
    assert gram_matrix(x.detach(), mask)[0, 1, 1] > 0.3  # b's energy is back


def test_gram_shape_errors():
    with pytest.raises(ValueError):
        gram_matrix(torch.zeros(3, 4, 4), torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError):
        gram_matrix(torch.zeros(1, 3, 4, 4), torch.ones(1, 1, 4, 5))
    with pytest.raises(ValueError):
        gram_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 2), torch.ones(1, 1, 4, 4))
