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

What is fixed for a pyramid level is prepared once (the targets' windows, norms and validity; their cells as rows
to gather votes from, with their squared norms), and search, vote and loss work on the crop of the map around the
weighted region only (issue #16).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

_EPS = 1e-8


def _mean3(x: torch.Tensor) -> torch.Tensor:
    """Mean over each 3x3 neighbourhood (zero padding), (B, 1, H, W) -> same. NCC is a ratio of such means.

    The nine shifted maps are added in avg_pool2d's order (row by row), which gives its bits at a fraction of its
    cost on CPU: the targets' norms and validity once per level, the query's norm once per search (the search's
    per-offset sums use the cheaper ``_box_sum``)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1))
    total = padded[..., :h, :w].clone()
    for dy, dx in [(dy, dx) for dy in range(3) for dx in range(3)][1:]:
        total += padded[..., dy : dy + h, dx : dx + w]
    return total / 9


def _box_sum(x: torch.Tensor, padded: torch.Tensor) -> torch.Tensor:
    """Sum over each 3x3 neighbourhood (zero padding) of x (B, 1, h, w), in two separable passes through
    ``padded`` (B, 1, h + 2, w + 2), whose border must be zero: the search's inner loop, 4 additions instead of 8."""
    h, w = x.shape[-2:]
    padded[..., 1 : h + 1, 1 : w + 1] = x
    rows = padded[..., :, :w] + padded[..., :, 1 : w + 1]
    rows += padded[..., :, 2 : w + 2]
    total = rows[..., :h, :] + rows[..., 1 : h + 1, :]
    total += rows[..., 2 : h + 2, :]
    return total


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


def _bounds(region: torch.Tensor | None, h: int, w: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the bounding box of ``region`` (H, W) bool, the whole map when None or empty."""
    if region is None or not region.any():
        return 0, h, 0, w
    rows, cols = region.any(1).nonzero()[:, 0], region.any(0).nonzero()[:, 0]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


class WindowSearch:
    """:func:`nearest_patches` against fixed targets and region, with what does not change between searches done
    once: the targets' crop around the searched region (padded by the window), their inverse patch norms and the
    penalty that keeps invalid candidates out. An offset's products are taken for a few targets at a time, so that
    they stay in the CPU's cache; the best offset so far is kept as int16 (a quarter of long's memory traffic).
    """

    PRODUCT = 2**20  # elements of one offset's products taken at once

    def __init__(self, targets: torch.Tensor, valid: torch.Tensor, radius: int, region: torch.Tensor | None = None):
        if targets.ndim != 4 or valid.shape != (targets.shape[0], 1, *targets.shape[2:]):
            raise ValueError(f"targets must be (K, C, H, W) and valid (K, 1, H, W), got {tuple(targets.shape)} and "
                             f"{tuple(valid.shape)}")
        _, _, h, w = targets.shape
        if (2 * radius + 1) ** 2 > 2**15:
            raise ValueError(f"radius {radius} is too large for the search (at most 90 cells)")
        self.shape, self.radius, self.region = targets.shape[1:], radius, region
        self.inner = _bounds(region, h, w)
        y0, y1, x0, x1 = self.inner
        # The searched crop with a 1-cell border, so that box filtering over it is exact at its edges.
        self.crop = max(y0 - 1, 0), min(y1 + 1, h), max(x0 - 1, 0), min(x1 + 1, w)
        cy0, cy1, cx0, cx1 = self.crop
        r, pad = radius, radius + 1
        # Candidate cells of the crop's windows, rows cy0 - r .. cy1 + r - 1 of the map (cols alike); padding is
        # invalid.
        window = (slice(None), slice(cy0 + pad - r, cy1 + pad + r), slice(cx0 + pad - r, cx1 + pad + r))
        with torch.no_grad():
            # Per candidate patch: 1 / (9 |t|_rms) where all 9 cells are valid (the 9 turns the box sum of the
            # products into their mean), else 0 with a -inf penalty (never chosen).
            ok = _whole_patch_valid(valid)
            inv_norm = torch.where(ok, 1.0 / (9 * (_mean3((targets**2).sum(1, keepdim=True)).sqrt() + _EPS)), 0.0)
            self.targets = F.pad(targets, (pad, pad, pad, pad))[:, :, window[1], window[2]].contiguous()
            self.inv_norm = F.pad(inv_norm[:, 0], (pad, pad, pad, pad))[window].contiguous()
            self.penalty = F.pad(torch.where(ok, 0.0, -torch.inf)[:, 0], (pad, pad, pad, pad),
                                 value=-torch.inf)[window].contiguous()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> Matches:
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1:] != self.shape:
            raise ValueError(f"features must be (1, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        h, w = self.shape[1:]
        y0, y1, x0, x1 = self.inner
        cy0, cy1, cx0, cx1 = self.crop
        hh, ww = cy1 - cy0, cx1 - cx0
        r, side = self.radius, 2 * self.radius + 1
        k_n, c = self.targets.shape[:2]
        xc = x[:, :, cy0:cy1, cx0:cx1]
        best = torch.full((k_n, hh, ww), -torch.inf, device=x.device)
        best_offset = torch.zeros_like(best, dtype=torch.int16)  # index into the (2r+1)^2 offsets, row-major
        score, better = torch.empty_like(best), torch.empty_like(best, dtype=torch.bool)
        group = max(1, self.PRODUCT // (c * hh * ww))
        cells, padded = x.new_empty(k_n, 1, hh, ww), x.new_zeros(k_n, 1, hh + 2, ww + 2)
        for i in range(side * side):
            dy, dx = divmod(i, side)
            window = (slice(None), slice(dy, dy + hh), slice(dx, dx + ww))
            for k in range(0, k_n, group):
                torch.sum(xc * self.targets[k : k + group, :, dy : dy + hh, dx : dx + ww], 1, keepdim=True,
                          out=cells[k : k + group])
            torch.addcmul(self.penalty[window], _box_sum(cells, padded)[:, 0], self.inv_norm[window], out=score)
            torch.gt(score, best, out=better)
            torch.maximum(best, score, out=best)
            best_offset.masked_fill_(better, i)
        x_norm = _mean3((xc**2).sum(1, keepdim=True))[0, 0].sqrt() + _EPS  # turns dot/|t| into NCC
        score_c, k_c = best.max(0)
        offset_c = best_offset.gather(0, k_c[None])[0].long()
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
        if self.region is not None:
            out.found &= self.region
        return out


def nearest_patches(x: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, radius: int,
                    region: torch.Tensor | None = None) -> Matches:
    """Nearest 3x3 target patch (normalised cross-correlation) within ``radius`` cells of each position.

    x: (1, C, H, W) image features; targets: (K, C, H, W); valid: (K, 1, H, W) in [0, 1], where a candidate
    patch must be valid on all 9 cells. Border positions are never matched. ``region`` (H, W) bool limits the
    positions searched (others: not found). Repeated searches against the same targets: :class:`WindowSearch`.
    """
    _check(x, targets, valid)
    return WindowSearch(targets, valid, radius, region)(x)


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


class TargetRows(NamedTuple):
    """The targets' cells as rows, the layout :func:`vote` gathers from, with their squared norms."""

    values: torch.Tensor  # (K*H*W, C)
    squares: torch.Tensor  # (K*H*W,)


def target_rows(targets: torch.Tensor) -> TargetRows:
    """Each target cell's features as a row, once per level."""
    values = targets.permute(0, 2, 3, 1).reshape(-1, targets.shape[1])
    return TargetRows(values, (values**2).sum(1))


class _WeightedSquares(torch.autograd.Function):
    """sum W |x - A|^2 for x (1, C, H, W), with W and A given on a crop: autograd's own graph of the cropped
    expression (slice, subtract, square, weight, sum) costs twice as much per evaluation."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, mean: torch.Tensor, weight: torch.Tensor,
                crop: tuple[slice, slice]) -> torch.Tensor:
        diff = x[:, :, crop[0], crop[1]] - mean
        ctx.save_for_backward(diff, weight)
        ctx.crop, ctx.shape = crop, x.shape
        return (weight * diff**2).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        diff, weight = ctx.saved_tensors
        grad_x = diff.new_zeros(ctx.shape)
        torch.mul(grad * weight, 2 * diff, out=grad_x[:, :, ctx.crop[0], ctx.crop[1]])
        return grad_x, None, None, None


@dataclass
class Voted:
    """The patch loss for fixed matches, sum_q W(q) |x(q) - A(q)|^2 + constant, kept on the crop of the map where
    W is not zero (and a cell around it)."""

    crop: tuple[slice, slice]
    mean: torch.Tensor  # (1, C, h, w) A on the crop
    weight: torch.Tensor  # (1, 1, h, w) W on the crop
    constant: torch.Tensor  # the spread of the votes

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """The CNNMRF patch loss of the features x (1, C, H, W) for the matches voted."""
        return _WeightedSquares.apply(x, self.mean, self.weight, self.crop) + self.constant


@torch.no_grad()
def vote(rows: TargetRows, matches: Matches, weight: torch.Tensor) -> Voted:
    """Average target value each position receives from the 3x3 matched patches that cover it.

    rows: the targets as :func:`target_rows`; weight: (H, W) per-patch weight. Only the crop around the weighted
    patches is computed (elsewhere W and A are zero).
    """
    values = rows.values
    c, (h, w) = values.shape[1], weight.shape
    wp = weight.to(values.dtype) * matches.found
    y0, y1, x0, x1 = _bounds(wp > 0, h, w)
    crop = (slice(max(y0 - 1, 0), min(y1 + 1, h)), slice(max(x0 - 1, 0), min(x1 + 1, w)))
    qy, qx = torch.meshgrid(torch.arange(h, device=values.device)[crop[0]],
                            torch.arange(w, device=values.device)[crop[1]], indexing="ij")
    pad = (1, 1, 1, 1)  # patch centres one cell outside the crop (or the map) weigh 0
    wp_pad = F.pad(wp, pad)
    k_pad, dy_pad, dx_pad = (F.pad(m, pad) for m in (matches.k, matches.dy, matches.dx))
    size = qy.numel()
    acc = values.new_zeros(size, c)
    acc_sq = values.new_zeros(size)
    total = values.new_zeros(size)
    for uy in (-1, 0, 1):
        for ux in (-1, 0, 1):
            # Patch centred at p = q - u contributes t(p + d + u) = t(q + d_p) to position q.
            centres = (slice(crop[0].start + 1 - uy, crop[0].stop + 1 - uy),
                       slice(crop[1].start + 1 - ux, crop[1].stop + 1 - ux))
            ty = (qy + dy_pad[centres]).clamp(0, h - 1)
            tx = (qx + dx_pad[centres]).clamp(0, w - 1)
            index = ((k_pad[centres] * h + ty) * w + tx).reshape(-1)
            wv = wp_pad[centres].reshape(-1)
            acc += values.index_select(0, index) * wv[:, None]
            acc_sq += rows.squares.index_select(0, index) * wv
            total += wv
    mean = acc / total.clamp_min(_EPS)[:, None]
    spread = (acc_sq - (mean**2).sum(1) * total).sum()
    return Voted(crop, mean.T.contiguous().view(1, c, *qy.shape), total.view(1, 1, *qy.shape), spread)


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
        targets, valid, self.weight = targets.detach(), valid.detach(), weight.detach()
        self.radius, self.scale = radius, scale
        self.basis = principal_projection(targets, valid, search_energy)
        search_targets = project(targets, self.basis)
        self.guide = None
        if guides is not None:
            self.guide = guides[0].detach()
            search_targets = torch.cat([search_targets, guides[1].detach()], 1)
        region = self.weight > 0
        self.search: Callable[[torch.Tensor], Matches] = (
            WindowSearch(search_targets, valid, radius, region) if radius is not None
            else lambda query: nearest_patches_global(query, search_targets, valid, region))
        self.rows = target_rows(targets)
        self.matches: Matches | None = None

    def refresh(self, x: torch.Tensor) -> Matches:
        query = project(x.detach(), self.basis)
        if self.guide is not None:
            query = torch.cat([query, self.guide], 1)
        self.matches = self.search(query)
        self.voted = vote(self.rows, self.matches, self.weight)
        self.norm = 9.0 * float((self.weight * self.matches.found).sum().clamp_min(1.0)) * x.shape[1] * self.scale
        return self.matches

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.matches is None:
            self.refresh(x)
        return self.voted.loss(x) / self.norm
