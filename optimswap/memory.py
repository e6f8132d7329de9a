"""Will a run fit in memory? An estimate of an edit's peak memory from its config and the photo's size, checked
against what the device has available before anything heavy starts (a run that does not fit would otherwise swap
for minutes or be killed by the system with no message).

The constants are fitted to the peak resident memory of swaps on the CPU (the heaviest edit: VGG activations and
their gradients, the target photos' features, the classic start, occlusion and relighting at photo resolution),
measured with ``resource.getrusage`` above the process's size before the run, 2 iterations, 1 level:

    frame  targets  photo   measured  estimate (MB)
      64      1     0.7 MP     560       604
     128      1     0.7 MP     578       657
     256      1     0.7 MP     727       867
     512      1     0.7 MP    1694      1709
     256      8     0.7 MP    1043      1322
     512      8     0.7 MP    3512      3529
     128      1     2.8 MP    1187      1216
     128      1    11.2 MP    3293      3454

Those runs worked on the whole photo; an edit now works on the face's region of it (``pipeline.photo_region``), so
PER_PHOTO_PIXEL counts the region's pixels and PER_WHOLE_PIXEL the whole photo's (bench/big_photo.py, swap at
128 px, 1 level of 2 iterations, on a busy machine):

    photo                 region   measured  estimate (MB)
      1 MP upscaled       0.47 MP     591       650
      5 MP upscaled       2.2 MP     1290      1255
     20 MP upscaled       8.4 MP     2946      3479
     20 MP padded         0.41 MP     679      1357

L-BFGS's memory (two frame-sized vectors per remembered step) is added for the full run; a 512-px makeup run
measured 730 MB (estimate 1558 MB). The finest pyramid level sets the peak: a coarser level's buffers are freed
before the next one starts.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from optimswap.config import EditConfig
from optimswap.errors import OptionError

GIB = 2**30
FIXED = 400 * 2**20  # models loaded during a run (encoder, lighting net, occlusion, landmarks) and small buffers
PER_FRAME_PIXEL = 3356  # bytes per frame pixel: the optimized image through the encoder, its gradients, losses
PER_HELD_PIXEL = 1040  # bytes per frame pixel of each other image the edit encodes (a swap's target photos)
PER_PHOTO_PIXEL = 280  # bytes per pixel of the photo's face region: compositing, the classic start, occlusion
PER_WHOLE_PIXEL = 40  # bytes per pixel of the whole photo: decoding, the result's copy, encoding (bench/big_photo.py)

# cgroup (v2, v1) memory limit, usage and the reclaimable page cache's memory.stat key: a container's or a batch
# job's limit can be far below the machine's free memory.
CGROUPS = (("/sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
           ("/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))


def estimate_memory(cfg: EditConfig, region_pixels: int, photo_pixels: int | None = None) -> int:
    """Peak bytes an edit with ``cfg`` needs beyond what the process holds before the run, for a face region
    (``pipeline.photo_region``) of ``region_pixels`` in a photo of ``photo_pixels`` (default: the region is the
    photo; see the module's measurements)."""
    frame = cfg.size**2
    per_frame = PER_FRAME_PIXEL + PER_HELD_PIXEL * cfg.held_images()
    if cfg.optimizer == "lbfgs":  # 3 floats per pixel for each remembered step's two vectors and a few work vectors
        per_frame += 4 * 3 * (2 * min(cfg.lbfgs_history, cfg.iters) + 4)
    whole = region_pixels if photo_pixels is None else photo_pixels
    return FIXED + per_frame * frame + PER_PHOTO_PIXEL * region_pixels + PER_WHOLE_PIXEL * whole


def _cgroup_available() -> int | None:
    for folder, limit_file, usage_file, cache_key in CGROUPS:
        try:
            limit = (Path(folder) / limit_file).read_text().strip()
            usage = int((Path(folder) / usage_file).read_text())
            stat = dict(line.split() for line in (Path(folder) / "memory.stat").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if limit == "max" or int(limit) >= 2**60:  # no limit (v1 writes a huge number)
            return None
        return int(limit) - usage + int(stat.get(cache_key, 0))
    return None


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a run: the GPU's free memory, or the system's available memory (within the cgroup's limit);
    None where the system does not say."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        system = int(meminfo["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):  # not Linux
        try:
            system = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):  # macOS, Windows
            return None
    limited = _cgroup_available()
    return system if limited is None else min(system, limited)


def check_memory(cfg: EditConfig, region_pixels: int, photo_pixels: int, device: torch.device) -> None:
    """OptionError on ``size`` when the estimate exceeds the device's available memory (no check where that is
    unknown)."""
    needed, available = estimate_memory(cfg, region_pixels, photo_pixels), available_memory(device)
    if available is not None and needed > available:
        raise OptionError("size", f"needs about {needed / GIB:.1f} GiB of memory at size {cfg.size} for a "
                                  f"{photo_pixels / 1e6:.1f}-megapixel photo, {available / GIB:.1f} GiB available "
                                  f"({device}); use a smaller size")


__all__ = ["available_memory", "check_memory", "estimate_memory"]
