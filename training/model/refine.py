"""Masks at pixel precision from a coarse token grid: bilinear upsampling, then a colour guided
filter (He, Sun and Tang, "Guided Image Filtering", ECCV 2010 / TPAMI 2013) with the image as
the guide.

Per window of radius r, the filter fits each mask as an affine function of the three colour
channels, a = (Sigma + eps I)^-1 cov(I, p), b = mean(p) - a . mean(I), and averages the fits
over the windows that cover a pixel. A mask edge that lies within a few pixels of a colour
edge snaps to it; where colour is flat the mask stays smooth. Every operation is a box filter
(running sums), an elementwise product or a closed-form 3x3 inverse, so the exported graph
holds nothing beyond standard ONNX operators and stays deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _window_mean(x: torch.Tensor, radius: int, dim: int) -> torch.Tensor:
    """Means of x over the window i - r .. i + r along `dim`, clipped at both ends: differences
    of a running sum, so the cost does not grow with the radius.

    The running sum is taken of x less its mean along `dim`: it stays near zero instead of
    growing to n, so the difference of two sums loses little to float32 rounding.
    onnxruntime accumulates CumSum in float32 (PyTorch in float64); with uncentred sums the
    photo bundle's masks were 25x further from the float64 model than PyTorch's own float32
    and failed the parity gate (1.6e-4 at batch 3)."""
    n = x.shape[dim]
    centre = x.mean(dim=dim, keepdim=True)
    total = torch.cumsum(x - centre, dim=dim)
    first = torch.zeros_like(centre)
    last = total.narrow(dim, n - 1, 1)
    reps = [1] * x.dim()
    reps[dim] = radius
    # padded[r + k] = the sum of the first k entries, k clamped to 0 .. n
    padded = torch.cat([first.repeat(reps), first, total, last.repeat(reps)], dim=dim)
    sums = padded.narrow(dim, 2 * radius + 1, n) - padded.narrow(dim, 0, n)
    i = torch.arange(n, device=x.device)
    counts = ((i + radius + 1).clamp(max=n) - (i - radius).clamp(min=0)).to(x.dtype)
    return sums / (counts if dim == -1 else counts.unsqueeze(-1)) + centre


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over the (2r+1)^2 window around each pixel, clipped at the border. (B, C, H, W).

    Separable (the clipped window is a product of a row range and a column range, so the mean
    along rows, then along columns, is the 2-D mean exactly), and each 1-D mean is a difference
    of running sums: a few operations a pixel at any radius. As average pooling (2r+1
    operations a pixel and axis) the filter took 35% of the photo model's time in onnxruntime,
    whose pooling kernel is 16x slower than this on 65 channels of 128x128 at radius 32."""
    return _window_mean(_window_mean(x, radius, -1), radius, -2)


def _inverse3(m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of symmetric 3x3 matrices given by their six entries (each (B, 1, H, W))."""
    a, b, c, d, e, f = m["rr"], m["rg"], m["rb"], m["gg"], m["gb"], m["bb"]
    # cofactors of [[a b c] [b d e] [c e f]]
    c_rr = d * f - e * e
    c_rg = c * e - b * f
    c_rb = b * e - c * d
    c_gg = a * f - c * c
    c_gb = b * c - a * e
    c_bb = a * d - b * b
    det = a * c_rr + b * c_rg + c * c_rb
    inv = 1.0 / det
    return {
        "rr": c_rr * inv, "rg": c_rg * inv, "rb": c_rb * inv,
        "gg": c_gg * inv, "gb": c_gb * inv, "bb": c_bb * inv,
    }  # fmt: skip


def guided_filter(guide: torch.Tensor, masks: torch.Tensor, radius: int, eps: float):
    """guide (B, 3, H, W) image in [0, 1]; masks (B, K, H, W) -> filtered (B, K, H, W).

    The result is not renormalised: callers that need a distribution over slots clamp and
    renormalise it (`refine_masks`)."""
    mean_i = box_mean(guide, radius)  # (B, 3, H, W)
    r, g, b = guide[:, 0:1], guide[:, 1:2], guide[:, 2:3]
    mr, mg, mb = mean_i[:, 0:1], mean_i[:, 1:2], mean_i[:, 2:3]
    products = torch.cat([r * r, r * g, r * b, g * g, g * b, b * b], dim=1)
    second = box_mean(products, radius)
    cov = {
        "rr": second[:, 0:1] - mr * mr + eps,
        "rg": second[:, 1:2] - mr * mg,
        "rb": second[:, 2:3] - mr * mb,
        "gg": second[:, 3:4] - mg * mg + eps,
        "gb": second[:, 4:5] - mg * mb,
        "bb": second[:, 5:6] - mb * mb + eps,
    }
    inv = _inverse3(cov)
    mean_p = box_mean(masks, radius)  # (B, K, H, W)
    k = masks.shape[1]
    cross = box_mean(torch.cat([masks * r, masks * g, masks * b], dim=1), radius)
    cr = cross[:, :k] - mr * mean_p
    cg = cross[:, k : 2 * k] - mg * mean_p
    cb = cross[:, 2 * k :] - mb * mean_p
    ar = inv["rr"] * cr + inv["rg"] * cg + inv["rb"] * cb
    ag = inv["rg"] * cr + inv["gg"] * cg + inv["gb"] * cb
    ab = inv["rb"] * cr + inv["gb"] * cg + inv["bb"] * cb
    bias = mean_p - ar * mr - ag * mg - ab * mb
    coef = box_mean(torch.cat([ar, ag, ab, bias], dim=1), radius)
    return coef[:, :k] * r + coef[:, k : 2 * k] * g + coef[:, 2 * k : 3 * k] * b + coef[:, 3 * k :]


def refine_masks(
    grid_masks: torch.Tensor, image: torch.Tensor, radius: int, eps: float
) -> torch.Tensor:
    """Soft masks on the token grid (B, K, h, w), summing to 1 over slots, -> (B, K, H, W) at
    the image's size: upsampled bilinearly, then (radius > 0) guided by the image and
    renormalised over slots."""
    size = tuple(image.shape[-2:])
    up = F.interpolate(grid_masks, size=size, mode="bilinear", align_corners=False)
    if radius <= 0:
        return up
    out = guided_filter(image, up, radius, eps).clamp_min(0.0) + 1e-6
    return out / out.sum(dim=1, keepdim=True)
