"""CNNMRF patch loss (Li & Wand 2016) with a landmark-restricted nearest-neighbour search.

Every 3x3 patch of the image's feature map is pulled towards its nearest neighbour (normalised
cross-correlation) among the patches of all warped target maps. Because the targets are warped into the
source's landmark geometry, "the same facial region" is a window of ``radius`` cells around the same position.

Search and loss are split as in the calibration notes: the search (costly) runs every few L-BFGS iterations;
between searches the loss against the fixed matches is a cheap weighted MSE. Expanding
sum_p w(p) sum_u |x(p+u) - t(p+d_p+u)|^2 over the 9 patch cells u gives, per position q, a weighted squared
distance to the average A(q) of the 9 target values voted onto q, plus a constant (the spread of those votes)
that is computed once per search: the value and gradient are exactly the patch loss.

The search itself may run on a principal-component projection of the features that keeps a given share of
the targets' second moment (``search_energy``): dot products and norms of 3x3 patches are nearly unchanged,
while the per-offset cost falls with the channel count (relu1_1: 64 -> ~12 channels at 98 %).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-8


def _mean3(x: torch.Tensor) -> torch.Tensor:
    """Mean over each 3x3 neighbourhood (zero padding), (B, 1, H, W) -> same. NCC is a ratio of such means."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)


def _check(x: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[0] != 1:
        raise ValueError(f"features must be (1, C, H, W), got {tuple(x.shape)}")
    if targets.ndim != 4 or targets.shape[1:] != x.shape[1:]:
        raise ValueError(f"targets must be (K, C, H, W) matching {tuple(x.shape[1:])}, got {tuple(targets.shape)}")
    if valid.shape != (targets.shape[0], 1, *x.shape[2:]):
        raise ValueError(f"valid must be (K, 1, H, W), got {tuple(valid.shape)}")


@dataclass
class Matches:
    """Best target patch per position: target index, offset (dy, dx) and whether any candidate existed."""

    k: torch.Tensor  # (H, W) long
    dy: torch.Tensor  # (H, W) long
    dx: torch.Tensor  # (H, W) long
    found: torch.Tensor  # (H, W) bool
    score: torch.Tensor  # (H, W) normalised cross-correlation of the match

    @classmethod
    def none(cls, h: int, w: int, device) -> Matches:
        """No position matched yet."""
        def index():
            return torch.zeros(h, w, dtype=torch.long, device=device)

        return cls(index(), index(), index(), torch.zeros(h, w, dtype=torch.bool, device=device),
                   torch.full((h, w), -torch.inf, device=device))


def _whole_patch_valid(valid: torch.Tensor) -> torch.Tensor:
    """(K, 1, H, W) bool: every cell of the 3x3 target patch centred there is valid (a candidate)."""
    return _mean3(valid) > 1 - 1e-4


@torch.no_grad()
def nearest_patches(x: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, radius: int,
                    region: torch.Tensor | None = None) -> Matches:
    """Nearest 3x3 target patch (normalised cross-correlation) within ``radius`` cells of each position.

    x: (1, C, H, W) image features; targets: (K, C, H, W); valid: (K, 1, H, W) in [0, 1], where a candidate
    patch must be valid on all 9 cells. Border positions are never matched. ``region`` (H, W) bool limits the
    positions searched (others: not found).
    """
    _check(x, targets, valid)
    _, _, h, w = x.shape
    y0, y1, x0, x1 = 0, h, 0, w
    if region is not None and region.any():
        rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    r = radius
    # Pad so that every candidate window of the crop [y0-1-r, y1+1+r) is addressable; padding is invalid.
    pad = r + 1
    t_pad = F.pad(targets, (pad, pad, pad, pad))
    # Per candidate patch: 1 / |t| where all 9 cells are valid, else 0 with a -inf penalty (never chosen).
    ok = _whole_patch_valid(valid)
    inv_norm = torch.where(ok, 1.0 / (_mean3((targets**2).sum(1, keepdim=True)).sqrt() + _EPS), 0.0)
    inv_norm = F.pad(inv_norm[:, 0], (pad, pad, pad, pad))
    penalty = F.pad(torch.where(ok, 0.0, -torch.inf)[:, 0], (pad, pad, pad, pad), value=-torch.inf)
    # The crop of x with a 1-cell border so that box filtering over the crop is exact at its edges.
    cy0, cy1, cx0, cx1 = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
    xc = x[:, :, cy0:cy1, cx0:cx1]
    hh, ww = cy1 - cy0, cx1 - cx0
    best = torch.full((targets.shape[0], hh, ww), -torch.inf, device=x.device)
    best_offset = torch.zeros_like(best, dtype=torch.long)  # index into the (2r+1)^2 offsets, row-major
    side = 2 * r + 1
    for i in range(side * side):
        ys, xs = cy0 + i // side - r + pad, cx0 + i % side - r + pad
        window = (slice(None), slice(ys, ys + hh), slice(xs, xs + ww))
        dot = _mean3((xc * t_pad[:, :, ys : ys + hh, xs : xs + ww]).sum(1, keepdim=True))[:, 0]
        score = torch.addcmul(penalty[window], dot, inv_norm[window])
        better = score > best
        best = torch.maximum(best, score)
        best_offset.masked_fill_(better, i)
    x_norm = _mean3((xc**2).sum(1, keepdim=True))[0, 0].sqrt() + _EPS  # turns dot/|t| into NCC
    score_c, k_c = best.max(0)
    offset_c = best_offset.gather(0, k_c[None])[0]
    found_c = score_c > -torch.inf
    out = Matches.none(h, w, x.device)
    inner = (slice(y0 - cy0, y1 - cy0), slice(x0 - cx0, x1 - cx0))
    out.k[y0:y1, x0:x1] = k_c[inner]
    out.dy[y0:y1, x0:x1] = (offset_c // side - r)[inner]
    out.dx[y0:y1, x0:x1] = (offset_c % side - r)[inner]
    out.found[y0:y1, x0:x1] = found_c[inner]
    out.score[y0:y1, x0:x1] = (score_c / x_norm)[inner]
    # Only patches lying wholly inside the map take part (no zero-padded cells on either side).
    out.found[[0, -1], :] = False
    out.found[:, [0, -1]] = False
    if region is not None:
        out.found &= region
    return out


@torch.no_grad()
def nearest_patches_global(x: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor,
                           region: torch.Tensor | None = None, chunk: int = 2**22) -> Matches:
    """Nearest 3x3 target patch (normalised cross-correlation) anywhere in any target (CNNMRF's search).

    Same arguments and result as :func:`nearest_patches` without the window; the scores are one matrix product
    of normalised patches per chunk of at most ``chunk`` candidate-position pairs.
    """
    _check(x, targets, valid)
    _, c, h, w = targets.shape
    inner = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    inner[1:-1, 1:-1] = True  # whole patches only, on both sides
    ok = (_whole_patch_valid(valid)[:, 0] & inner).reshape(-1)
    candidates = F.unfold(targets, 3, padding=1).transpose(1, 2).reshape(-1, 9 * c)[ok]
    candidates = candidates / (candidates.norm(dim=1, keepdim=True) + _EPS)
    index = ok.nonzero()[:, 0]
    where = inner if region is None else inner & region
    positions = where.reshape(-1).nonzero()[:, 0]
    patches = F.unfold(x, 3, padding=1)[0][:, positions]
    patches = patches / (patches.norm(dim=0, keepdim=True) + _EPS)
    best = torch.full((positions.numel(),), -torch.inf, device=x.device)
    best_index = torch.zeros(positions.numel(), dtype=torch.long, device=x.device)
    step = max(1, chunk // max(candidates.shape[0], 1))
    for start in range(0, positions.numel() if candidates.shape[0] else 0, step):
        score, arg = (candidates @ patches[:, start : start + step]).max(0)
        best[start : start + step], best_index[start : start + step] = score, index[arg]
    out = Matches.none(h, w, x.device)
    py, px = positions // w, positions % w
    cell = best_index % (h * w)
    out.k[py, px] = best_index // (h * w)
    out.dy[py, px] = cell // w - py
    out.dx[py, px] = cell % w - px
    out.found[py, px] = best > -torch.inf
    out.score[py, px] = best
    return out


@torch.no_grad()
def vote(targets: torch.Tensor, matches: Matches, weight: torch.Tensor):
    """Average target value each position receives from the 3x3 matched patches that cover it.

    weight: (H, W) per-patch weight. Returns (A (1, C, H, W), W (1, 1, H, W), constant): the patch loss is
    sum W |x - A|^2 + constant.
    """
    k_n, c, h, w = targets.shape
    flat = targets.permute(1, 0, 2, 3).reshape(c, -1)
    wp = weight.to(targets.dtype) * matches.found
    acc = targets.new_zeros(c, h * w)
    acc_sq = targets.new_zeros(h * w)
    total = targets.new_zeros(h * w)
    qy, qx = torch.meshgrid(torch.arange(h, device=targets.device), torch.arange(w, device=targets.device),
                            indexing="ij")
    for uy in (-1, 0, 1):
        for ux in (-1, 0, 1):
            # Patch centred at p = q - u contributes t(p + d + u) = t(q + d_p) to position q.
            py, px = qy - uy, qx - ux
            inside = (py >= 0) & (py < h) & (px >= 0) & (px < w)
            pyc, pxc = py.clamp(0, h - 1), px.clamp(0, w - 1)
            wq = torch.where(inside, wp[pyc, pxc], torch.zeros_like(wp))
            ty = (qy + matches.dy[pyc, pxc]).clamp(0, h - 1)
            tx = (qx + matches.dx[pyc, pxc]).clamp(0, w - 1)
            vals = flat[:, (matches.k[pyc, pxc] * h + ty) * w + tx].reshape(c, -1)
            wv = wq.reshape(-1)
            acc += vals * wv
            acc_sq += (vals**2).sum(0) * wv
            total += wv
    mean = acc / total.clamp_min(_EPS)
    constant = (acc_sq - (mean**2).sum(0) * total).sum()
    return mean.reshape(1, c, h, w), total.reshape(1, 1, h, w), constant


def voted_patch_loss(x: torch.Tensor, voted: torch.Tensor, vote_weight: torch.Tensor,
                     constant: torch.Tensor) -> torch.Tensor:
    """sum_q W(q) |x(q) - A(q)|^2 + constant = the CNNMRF patch loss for fixed matches."""
    return (vote_weight * (x - voted) ** 2).sum() + constant


@torch.no_grad()
def principal_projection(targets: torch.Tensor, valid: torch.Tensor, energy: float) -> torch.Tensor | None:
    """(C, m) orthonormal basis of the fewest principal directions keeping ``energy`` of the valid target
    cells' (uncentred) second moment, or None when that needs every channel (energy >= 1)."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"search energy must be in (0, 1], got {energy}")
    c = targets.shape[1]
    if energy >= 1.0:
        return None
    cells = (targets * valid).permute(1, 0, 2, 3).reshape(c, -1).double()
    eigval, eigvec = torch.linalg.eigh(cells @ cells.T)
    eigval, eigvec = eigval.flip(0).clamp_min(0), eigvec.flip(1)
    kept = int((eigval.cumsum(0) < energy * eigval.sum()).sum()) + 1
    return None if kept >= c else eigvec[:, :kept].to(targets.dtype)


def project(features: torch.Tensor, basis: torch.Tensor | None) -> torch.Tensor:
    """(B, C, H, W) -> (B, m, H, W) coordinates in ``basis``; unchanged when basis is None."""
    return features if basis is None else torch.einsum("bchw,cm->bmhw", features, basis).contiguous()


class PatchStyleLoss(nn.Module):
    """Restricted CNNMRF loss of one feature layer against K warped targets.

    ``radius`` None searches everywhere (CNNMRF), else within that many cells of the same position.
    ``refresh(x)`` recomputes the matches (on the ``search_energy`` projection); ``forward(x)`` returns the
    loss on the full features, normalised per matched patch element and by ``scale`` (mean squared source
    activation), so layers weigh alike. ``guides`` (image's (1, G, H, W), targets' (K, G, H, W)): fixed channels
    appended to the search only (FaceBlit's appearance guide), already scaled to the weight they should have.
    """

    def __init__(self, targets: torch.Tensor, valid: torch.Tensor, weight: torch.Tensor, radius: int | None,
                 scale: float, search_energy: float = 1.0,
                 guides: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        if weight.shape != targets.shape[2:]:
            raise ValueError(f"weight must be (H, W) = {tuple(targets.shape[2:])}, got {tuple(weight.shape)}")
        self.targets, self.valid, self.weight = targets.detach(), valid.detach(), weight.detach()
        self.radius, self.scale = radius, scale
        self.basis = principal_projection(self.targets, self.valid, search_energy)
        self.search_targets = project(self.targets, self.basis)
        self.guide = None
        if guides is not None:
            self.guide = guides[0].detach()
            self.search_targets = torch.cat([self.search_targets, guides[1].detach()], 1)
        self.matches: Matches | None = None

    def refresh(self, x: torch.Tensor) -> Matches:
        query, region = project(x.detach(), self.basis), self.weight > 0
        if self.guide is not None:
            query = torch.cat([query, self.guide], 1)
        if self.radius is None:
            self.matches = nearest_patches_global(query, self.search_targets, self.valid, region)
        else:
            self.matches = nearest_patches(query, self.search_targets, self.valid, self.radius, region)
        self.voted, self.vote_weight, self.constant = vote(self.targets, self.matches, self.weight)
        self.norm = 9.0 * float((self.weight * self.matches.found).sum().clamp_min(1.0)) * x.shape[1] * self.scale
        return self.matches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matches is None:
            self.refresh(x)
        return voted_patch_loss(x, self.voted, self.vote_weight, self.constant) / self.norm
