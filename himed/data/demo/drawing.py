"""Drawing a demo study (pure: a uint8 array from findings, a view and a seed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from himed.clinical.observations import SUPPORT_DEVICES
from himed.data.demo.findings import (
    ATELECTASIS,
    CARDIOMEGALY,
    CONSOLIDATION,
    EDEMA,
    EFFUSION,
    MIN_IMAGE_SIZE,
    PNEUMOTHORAX,
    ImageFinding,
    image_findings_from_labels,
)


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    # Pixel centres in [0, 1]: geometry is written in fractions of the image so any size draws the same picture.
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    return yy, xx


def _soft_ellipse(
    yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, edge: float
) -> np.ndarray:
    """1 inside the ellipse, 0 outside, a linear ramp about ``edge`` wide (in image fractions) at its border."""
    out = np.zeros_like(yy)
    size = yy.shape[0]
    r0, r1 = _pixel_range(cy - ry - 2 * edge, cy + ry + 2 * edge, size)
    c0, c1 = _pixel_range(cx - rx - 2 * edge, cx + rx + 2 * edge, size)
    if r0 >= r1 or c0 >= c1:
        return out
    ys, xs = yy[r0:r1, c0:c1], xx[r0:r1, c0:c1]
    r = np.sqrt(((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2)
    out[r0:r1, c0:c1] = np.clip((1.0 - r) * (min(ry, rx) / edge) + 0.5, 0.0, 1.0)
    return out


def _segment(
    yy: np.ndarray,
    xx: np.ndarray,
    p0: tuple[float, float],
    p1: tuple[float, float],
    width: float,
    into: np.ndarray | None = None,
) -> np.ndarray:
    """A line from ``p0`` to ``p1`` ((y, x) fractions) with a Gaussian profile of std ``width``.

    With ``into``, the line is max-combined into that array in place (and it is returned): no full-size temporary.
    """
    (y0, x0), (y1, x1) = p0, p1
    out = np.zeros_like(yy) if into is None else into
    # Only the segment's bounding box (plus 4 std) is computed: most lines are short and this is the hot loop.
    size = yy.shape[0]
    pad = 4 * width
    r0, r1 = _pixel_range(min(y0, y1) - pad, max(y0, y1) + pad, size)
    c0, c1 = _pixel_range(min(x0, x1) - pad, max(x0, x1) + pad, size)
    if r0 >= r1 or c0 >= c1:
        return out
    ys, xs = yy[r0:r1, c0:c1], xx[r0:r1, c0:c1]
    dy, dx = y1 - y0, x1 - x0
    t = np.clip(((ys - y0) * dy + (xs - x0) * dx) / max(dy * dy + dx * dx, 1e-12), 0.0, 1.0)
    dist2 = (ys - (y0 + t * dy)) ** 2 + (xs - (x0 + t * dx)) ** 2
    window = out[r0:r1, c0:c1]
    np.maximum(window, np.exp(-dist2 / (2 * width * width)), out=window)
    return out


def _pixel_range(low: float, high: float, size: int) -> tuple[int, int]:
    return max(0, int(np.floor(low * size))), min(size, int(np.ceil(high * size)) + 1)


def _polyline(yy: np.ndarray, xx: np.ndarray, points: Sequence[tuple[float, float]], width: float) -> np.ndarray:
    out = np.zeros_like(yy)
    for a, b in zip(points, points[1:], strict=False):
        _segment(yy, xx, a, b, width, into=out)
    return out


def _mix(image: np.ndarray, value: float, alpha: np.ndarray) -> np.ndarray:
    return image * (1.0 - alpha) + value * alpha


@dataclass(frozen=True)
class _Lung:
    cy: float
    cx: float
    ry: float
    rx: float
    lateral: float  # +1 when the lateral chest wall is towards larger x (image right = patient left)

    @property
    def bottom(self) -> float:
        return self.cy + self.ry


def _sides(side: str | None) -> tuple[str, ...]:
    return ("right", "left") if side == "bilateral" else (side or "right",)


_FAINT = 0.45  # hedged (-1) findings are drawn at this fraction of the intensity
_EDEMA_HAZE = {"mild": 0.16, "moderate": 0.22, "severe": 0.28}
_EDEMA_HAZE_HEDGED = 0.08


def _by_observation(findings: Sequence[ImageFinding]) -> dict[str, list[ImageFinding]]:
    by_obs: dict[str, list[ImageFinding]] = {}
    for f in findings:
        by_obs.setdefault(f.observation, []).append(f)
    return by_obs


def _effusion_height(finding: ImageFinding) -> tuple[float, float]:
    """(fluid height in image fractions, opacity) of an effusion: graded when clear, small and faint when hedged."""
    if finding.certainty != 1:
        return 0.07, 0.6
    return {"small": 0.09, "moderate": 0.15, "large": 0.22}[finding.severity], 1.0


def _patchy_opacity(
    finding: ImageFinding, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, spread_x: float, detail
) -> np.ndarray:
    """A consolidation: six overlapping Gaussian blobs about (cy, cx), scaled by the finding's certainty."""
    blobs = np.zeros_like(yy)
    for _ in range(6):
        by, bx = cy + detail.uniform(-0.05, 0.05), cx + detail.uniform(-spread_x, spread_x)
        sigma = detail.uniform(0.025, 0.04)
        blobs = blobs + detail.uniform(0.6, 1.0) * np.exp(-((yy - by) ** 2 + (xx - bx) ** 2) / (2 * sigma**2))
    amp = 0.38 if finding.certainty == 1 else 0.38 * _FAINT
    return amp * np.clip(blobs, 0, 1)


@dataclass(frozen=True)
class _DeviceLayout:
    """Where the support devices run on one view, in (y, x) image fractions before the patient's shift.

    ``courses``: each device's polyline (the pacemaker's is its lead). A point at y = 0 is where a tube enters at
    the top edge of the film, so it stays there when the patient shifts. ``pacemaker_box``: the generator's
    (centre y, centre x, half height, half width).
    """

    courses: dict[str, tuple[tuple[float, float], ...]]
    pacemaker_box: tuple[float, float, float, float]


_FRONTAL_DEVICES = _DeviceLayout(
    courses={
        "endotracheal tube": ((0.0, 0.5), (0.3, 0.5)),
        # Right internal jugular: the patient's right is the image's left.
        "central line": ((0.06, 0.37), (0.2, 0.44), (0.42, 0.46)),
        "enteric tube": ((0.0, 0.515), (0.7, 0.53), (0.86, 0.66)),
        "pacemaker": ((0.2, 0.77), (0.3, 0.55), (0.66, 0.5)),
    },
    pacemaker_box=(0.2, 0.8, 0.035, 0.05),
)
_LATERAL_DEVICES = _DeviceLayout(
    courses={
        "endotracheal tube": ((0.0, 0.42), (0.3, 0.5)),
        "central line": ((0.08, 0.5), (0.42, 0.4)),
        "enteric tube": ((0.0, 0.5), (0.7, 0.62), (0.86, 0.55)),
        # Anterior chest wall (image left), the lead running back to the heart.
        "pacemaker": ((0.2, 0.15), (0.35, 0.3), (0.65, 0.35)),
    },
    pacemaker_box=(0.2, 0.13, 0.035, 0.03),
)


def _draw_devices(
    image: np.ndarray,
    devices: Sequence[ImageFinding],
    layout: _DeviceLayout,
    shift_y: float,
    shift_x: float,
    line_width: float,
) -> np.ndarray:
    """Bright (radiopaque) lines for ``devices`` on one view, drawn over everything else."""
    yy, xx = _grid(image.shape[0])
    drawn = np.zeros_like(image)
    for f in devices:
        points = [(y if y == 0.0 else y + shift_y, x + shift_x) for y, x in layout.courses[f.device]]
        line = _polyline(yy, xx, points, line_width)
        if f.device == "pacemaker":
            cy, cx, half_y, half_x = layout.pacemaker_box
            box = np.clip(1.0 - np.maximum(abs(yy - cy - shift_y) / half_y, abs(xx - cx - shift_x) / half_x), 0, 1) * 4
            line = np.maximum(np.clip(box, 0, 1), line)
        drawn = np.maximum(drawn, line)
    return _mix(image, 0.97, drawn)


def _draw_frontal(
    findings: Sequence[ImageFinding], size: int, anatomy: np.random.Generator, detail: np.random.Generator
) -> np.ndarray:
    yy, xx = _grid(size)
    edge = 1.2 / size
    line_width = max(0.008, 0.9 / size)
    shift_x, shift_y = anatomy.uniform(-0.025, 0.025, size=2)
    scale = anatomy.uniform(0.94, 1.06)
    lungs = {
        # Patient's right lung is on the image's left.
        "right": _Lung(0.47 + shift_y, 0.29 + shift_x, 0.30 * scale, 0.155 * scale, -1.0),
        "left": _Lung(0.47 + shift_y, 0.71 + shift_x, 0.29 * scale, 0.15 * scale, 1.0),
    }
    by_obs = _by_observation(findings)

    image = np.full((size, size), 0.04, dtype=np.float32)
    image = _mix(image, 0.30, _soft_ellipse(yy, xx, 0.58 + shift_y, 0.5 + shift_x, 0.52, 0.47, edge))
    lung_masks = {name: _soft_ellipse(yy, xx, lung.cy, lung.cx, lung.ry, lung.rx, edge) for name, lung in lungs.items()}
    lung_any = np.maximum(lung_masks["right"], lung_masks["left"])
    image = _mix(image, 0.12, lung_any)

    # Lung markings: vessels fanning out from each hilum, fading towards the periphery.
    markings = np.zeros_like(image)
    for lung in lungs.values():
        hilum = (lung.cy - 0.01, lung.cx - lung.lateral * 0.09)
        for angle in np.linspace(-1.1, 1.2, 6) + anatomy.uniform(-0.12, 0.12, size=6):
            length = anatomy.uniform(0.16, 0.24)
            end = (hilum[0] - np.sin(angle) * length * 1.2, hilum[1] + lung.lateral * np.cos(angle) * length)
            _segment(yy, xx, hilum, end, 0.006, into=markings)
    image = image + 0.07 * markings * lung_any

    # Ribs: seven gentle arcs across each lung, as one periodic profile per lung.
    rib_gap = anatomy.uniform(0.08, 0.09)
    rib_start = anatomy.uniform(0.19, 0.23) + shift_y
    ribs = np.zeros_like(image)
    for lung in lungs.values():
        offset = yy - rib_start - 0.06 * ((xx - (lung.cx - lung.lateral * 0.12)) / 0.25) ** 2
        nearest = offset - rib_gap * np.clip(np.rint(offset / rib_gap), 0, 6)
        ribs = np.maximum(ribs, np.exp(-(nearest**2) / (2 * 0.007**2)))
    image = image + 0.06 * ribs * lung_any

    for f in by_obs.get(PNEUMOTHORAX, []):
        # The lung collapses away from the apex and the lateral wall: outside it, black with no markings, and a
        # bright visceral pleural edge.
        lung = lungs[_sides(f.side)[0]]
        collapse = {"small": 0.3, "moderate": 0.4, "large": 0.52}[f.severity] if f.certainty == 1 else 0.2
        ry, rx = lung.ry * (1 - 0.7 * collapse), lung.rx * (1 - collapse)
        cy, cx = lung.bottom - ry, lung.cx - lung.lateral * (lung.rx - rx)
        inner = _soft_ellipse(yy, xx, cy, cx, ry, rx, edge)
        outer = _soft_ellipse(yy, xx, lung.cy, lung.cx, lung.ry, lung.rx, edge)
        gas = outer * (1 - inner)
        strength = 1.0 if f.certainty == 1 else _FAINT
        image = _mix(image, 0.02, gas * strength)
        rim = _soft_ellipse(yy, xx, cy, cx, ry + 0.016, rx + 0.016, edge) * (1 - inner) * outer
        image = image + 0.45 * strength * rim

    for f in by_obs.get(EDEMA, []):
        amp = _EDEMA_HAZE[f.severity] if f.certainty == 1 else _EDEMA_HAZE_HEDGED
        haze = np.zeros_like(image)
        for lung in lungs.values():
            hy, hx = lung.cy, lung.cx - lung.lateral * 0.06
            haze = np.maximum(haze, np.exp(-(((yy - hy) / 0.14) ** 2 + ((xx - hx) / 0.10) ** 2) / 2))
            if f.certainty == 1:  # septal (Kerley B) lines at the lateral bases
                for k in range(4):
                    y_line = lung.bottom - 0.06 - 0.035 * k
                    x_wall = lung.cx + lung.lateral * (lung.rx * 0.85)
                    kerley = _segment(yy, xx, (y_line, x_wall), (y_line, x_wall - lung.lateral * 0.06), 0.005)
                    haze = np.maximum(haze, 0.8 * kerley)
        image = image + amp * haze * lung_any

    # Effusions before the other basal signs, so consolidation and atelectasis stay visible over or above fluid.
    fluid_top = {side: lung.bottom for side, lung in lungs.items()}
    for f in by_obs.get(EFFUSION, []):
        height, strength = _effusion_height(f)
        for side in _sides(f.side):
            lung = lungs[side]
            # The meniscus: the fluid line rises towards the lateral chest wall.
            lateral_pos = np.clip((xx - lung.cx) * lung.lateral / lung.rx, 0, 1)
            level = lung.bottom - height - 0.08 * lateral_pos
            fluid = np.clip((yy - level) / (2 * edge) + 0.5, 0, 1) * lung_masks[side]
            image = _mix(image, 0.50, fluid * strength)
            fluid_top[side] = lung.bottom - height - 0.08

    for f in by_obs.get(CONSOLIDATION, []):
        lung = lungs[_sides(f.side)[0]]
        cy = lung.cy + (-0.13 if f.zone == "upper" else 0.12) + detail.uniform(-0.02, 0.02)
        cx = lung.cx + lung.lateral * detail.uniform(-0.01, 0.04)
        image = image + _patchy_opacity(f, yy, xx, cy, cx, 0.045, detail) * lung_masks[_sides(f.side)[0]]

    for f in by_obs.get(ATELECTASIS, []):
        amp = {"minimal": 0.4, "mild": 0.46}[f.severity] if f.certainty == 1 else 0.46 * _FAINT
        for side in _sides(f.side):
            lung = lungs[side]
            # Above the base (and above any fluid), towards the lateral side where the heart does not cover it.
            y0 = min(lung.bottom - 0.11, fluid_top[side] - 0.04) + detail.uniform(-0.015, 0.015)
            tilt = detail.uniform(-0.03, 0.03)
            medial, lateral = lung.cx - lung.lateral * 0.05, lung.cx + lung.lateral * 0.11
            band = _segment(yy, xx, (y0 - tilt, medial), (y0 + tilt, lateral), 0.016)
            image = image + amp * band * lung_masks[side]

    # Mediastinum: spine and trachea, then the heart.
    image = _mix(image, 0.46, _soft_ellipse(yy, xx, 0.40 + shift_y, 0.5 + shift_x, 0.40, 0.055, edge))
    image = _mix(image, 0.16, _soft_ellipse(yy, xx, 0.2 + shift_y, 0.5 + shift_x, 0.17, 0.018, edge))
    heart_rx = anatomy.uniform(0.115, 0.13)
    for f in by_obs.get(CARDIOMEGALY, []):
        heart_rx = {"mild": 0.175, "moderate": 0.2, "severe": 0.23}[f.severity] if f.certainty == 1 else 0.155
    heart_ry = 0.11 + 0.25 * (heart_rx - 0.12)
    # The heart sits a little towards the patient's left (image right); an enlarged one widens both borders, so
    # the sign is visible on either side of the spine.
    heart = _soft_ellipse(yy, xx, 0.64 + shift_y, 0.53 + shift_x, heart_ry, heart_rx, edge)
    image = _mix(image, 0.52, heart)
    # Clavicles.
    for lateral in (-1.0, 1.0):
        clavicle = _segment(
            yy, xx, (0.15 + shift_y, 0.5 + shift_x + 0.06 * lateral), (0.11 + shift_y, 0.5 + 0.3 * lateral), 0.012
        )
        image = image + 0.15 * clavicle

    return _draw_devices(image, by_obs.get(SUPPORT_DEVICES, []), _FRONTAL_DEVICES, shift_y, shift_x, line_width)


def _draw_lateral(
    findings: Sequence[ImageFinding], size: int, anatomy: np.random.Generator, detail: np.random.Generator
) -> np.ndarray:
    """A lateral view (anterior to the image's left): no laterality, but the same findings, drawn on one lung field."""
    yy, xx = _grid(size)
    edge = 1.2 / size
    line_width = max(0.008, 0.9 / size)
    shift_x, shift_y = anatomy.uniform(-0.025, 0.025, size=2)
    lung = _Lung(0.47 + shift_y, 0.5 + shift_x, 0.31, 0.28, 1.0)
    by_obs = _by_observation(findings)

    image = np.full((size, size), 0.04, dtype=np.float32)
    image = _mix(image, 0.30, _soft_ellipse(yy, xx, 0.56 + shift_y, 0.5 + shift_x, 0.52, 0.44, edge))
    lung_mask = _soft_ellipse(yy, xx, lung.cy, lung.cx, lung.ry, lung.rx, edge)
    image = _mix(image, 0.13, lung_mask)
    for k in range(6):  # posterior ribs crossing obliquely
        y_rib = 0.22 + 0.09 * k + shift_y
        image = image + 0.05 * _segment(yy, xx, (y_rib - 0.05, 0.3), (y_rib + 0.05, 0.8), 0.007) * lung_mask
    # Spine (posterior, image right) as vertebral blocks, sternum (anterior) as a thin band.
    vertebrae = (np.sin((yy - shift_y) * 2 * np.pi / 0.075) > -0.6).astype(np.float32)
    spine = _soft_ellipse(yy, xx, 0.55 + shift_y, 0.86 + shift_x, 0.5, 0.05, edge) * vertebrae
    image = _mix(image, 0.5, spine)
    image = _mix(image, 0.42, _soft_ellipse(yy, xx, 0.45 + shift_y, 0.15 + shift_x, 0.22, 0.015, edge))

    for f in by_obs.get(PNEUMOTHORAX, []):
        strength = 1.0 if f.certainty == 1 else _FAINT
        gas = _soft_ellipse(yy, xx, lung.cy - lung.ry * 0.75, lung.cx, lung.ry * 0.35, lung.rx * 0.7, edge) * lung_mask
        image = _mix(image, 0.03, gas * 0.7 * strength)
    for f in by_obs.get(EDEMA, []):
        amp = _EDEMA_HAZE[f.severity] if f.certainty == 1 else _EDEMA_HAZE_HEDGED
        haze = np.exp(-(((yy - lung.cy) / 0.15) ** 2 + ((xx - lung.cx) / 0.13) ** 2) / 2)
        image = image + amp * haze * lung_mask
    fluid_top = lung.bottom
    for f in by_obs.get(EFFUSION, []):
        height, strength = _effusion_height(f)
        # Fluid gathers first in the posterior costophrenic sulcus (image right on this lateral).
        posterior = np.clip((xx - lung.cx) / lung.rx, 0, 1)
        level = lung.bottom - height - 0.08 * posterior
        fluid = np.clip((yy - level) / (2 * edge) + 0.5, 0, 1) * lung_mask
        image = _mix(image, 0.5, fluid * strength)
        fluid_top = min(fluid_top, lung.bottom - height - 0.08)
    for f in by_obs.get(CONSOLIDATION, []):
        cy = lung.cy + (-0.12 if f.zone == "upper" else 0.12)
        cx = lung.cx + detail.uniform(-0.08, 0.08)
        image = image + _patchy_opacity(f, yy, xx, cy, cx, 0.05, detail) * lung_mask
    for f in by_obs.get(ATELECTASIS, []):
        amp = 0.42 if f.certainty == 1 else 0.42 * _FAINT
        y0 = min(lung.bottom - 0.1, fluid_top - 0.04) + detail.uniform(-0.015, 0.015)
        image = image + amp * _segment(yy, xx, (y0, lung.cx - 0.15), (y0 + 0.02, lung.cx + 0.12), 0.016) * lung_mask

    heart_rx = anatomy.uniform(0.12, 0.135)
    for f in by_obs.get(CARDIOMEGALY, []):
        heart_rx = {"mild": 0.17, "moderate": 0.195, "severe": 0.225}[f.severity] if f.certainty == 1 else 0.15
    # The heart is anterior and grows backwards into the lung field.
    heart = _soft_ellipse(yy, xx, 0.64 + shift_y, 0.3 + shift_x + 0.8 * (heart_rx - 0.12), 0.13, heart_rx, edge)
    image = _mix(image, 0.5, heart)

    return _draw_devices(image, by_obs.get(SUPPORT_DEVICES, []), _LATERAL_DEVICES, shift_y, shift_x, line_width)


def _mottle(noise: np.random.Generator, size: int, std: float = 0.025) -> np.ndarray:
    from PIL import Image

    coarse = noise.normal(0.0, std, size=(max(2, size // 8),) * 2).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BILINEAR))


def draw_view(
    image_findings: Sequence[ImageFinding], view: str = "PA", size: int = 112, seed: int | Sequence[int] = 0
) -> np.ndarray:
    """Draw one view of a study: a ``size`` x ``size`` uint8 array (0 black .. 255 white).

    ``seed`` fixes the patient's anatomy (position, rib spacing, heart size, markings), the findings' detail, the
    mottle and the contrast curve through four independent streams, so drawing the same seed with and without a
    finding changes only the pixels the finding touches. ``view`` is PA, AP (frontal; AP slightly washed out, as
    portable films are) or LATERAL (anterior to the image's left; no laterality).
    """
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size must be at least {MIN_IMAGE_SIZE} pixels, got {size}")
    seed_words = [int(seed)] if isinstance(seed, int | np.integer) else [int(s) for s in seed]
    anatomy, detail, noise, tone = (
        np.random.default_rng(child) for child in np.random.SeedSequence(seed_words).spawn(4)
    )
    view = view.upper()
    if view in ("PA", "AP"):
        image = _draw_frontal(image_findings, size, anatomy, detail)
    elif view == "LATERAL":
        image = _draw_lateral(image_findings, size, anatomy, detail)
    else:
        raise ValueError(f"unknown view {view!r}; use PA, AP or LATERAL")
    if view == "AP":
        # Portable AP films: a slightly washed-out look, a cue a model may use but no label depends on.
        image = 0.06 + 0.92 * image
    # Mild film mottle: coarse (1/8 resolution, bilinear) rather than per-pixel noise, which would double the PNGs.
    image = image + _mottle(noise, size)
    levels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    # Contrast varies between "machines": a gamma curve applied as a 256-entry lookup table (cheap).
    gamma = tone.uniform(0.85, 1.15)
    lut = np.rint(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    return lut[levels]


def draw_from_labels(
    labels: Mapping[str, int], view: str = "PA", size: int = 112, seed: int = 0, side: str = "right"
) -> np.ndarray:
    """Draw a study image from CheXpert-style labels (see :func:`image_findings_from_labels`)."""
    return draw_view(image_findings_from_labels(labels, side), view, size, seed)


# ----------------------------------------------------------------------------------------------------------------
# Files (the I/O edge)
# ----------------------------------------------------------------------------------------------------------------
