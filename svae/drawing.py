"""Drawing the paper's figures: grids of images, heat maps, residual images.

Pure numpy and Pillow on arrays that `svae.inference` computed: nothing here
runs a model. Residuals of Y are shown as gray images with +-3 robust
standard deviations of the figure's residuals (`residual_spread`) spanning
black to white; standard deviations as a black-purple-orange-yellow heat
map (`colormap`).
"""

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = [
    "colormap",
    "heat_map",
    "residual_image",
    "residual_spread",
    "save_grid",
]

# Control points of a black-purple-orange-yellow map (like matplotlib's
# "inferno"), interpolated linearly: readable in print and for most colour
# vision deficiencies.
_HEAT = np.array(
    [
        [0.0, 0.0, 0.02],
        [0.26, 0.04, 0.41],
        [0.58, 0.15, 0.40],
        [0.87, 0.32, 0.23],
        [0.99, 0.64, 0.04],
        [0.99, 1.0, 0.64],
    ]
)


def colormap(values, vmax):
    """Maps `[...]` values in `[0, vmax]` to `[..., 3]` RGB in [0, 1]."""
    t = np.clip(np.asarray(values, np.float64) / max(vmax, 1e-12), 0.0, 1.0)
    points = np.linspace(0.0, 1.0, len(_HEAT))
    return np.stack([np.interp(t, points, _HEAT[:, c]) for c in range(3)], axis=-1)


def save_grid(rows, labels, path, scale=2, title=None):
    """Writes rows of images as one PNG with a label left of each row.

    Args:
      rows: a list of `[n, H, W, 3]` (or `[n, H, W]` gray) arrays in [0, 1].
      labels: one string per row.
      path: the PNG file to write.
      scale: nearest-neighbour magnification of each image.
      title: optional line of text above the grid.

    Returns:
      The path, as a `pathlib.Path`.
    """
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = 8 + max(int(measure.textlength(text, font=font)) for text in labels)
    gap = 2
    height, width = np.asarray(rows[0]).shape[1:3]
    cell_h, cell_w = height * scale, width * scale
    top = 16 if title else 0
    n_cols = max(len(row) for row in rows)
    canvas = Image.new(
        "RGB",
        (label_width + n_cols * (cell_w + gap), top + len(rows) * (cell_h + gap)),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((4, 2), title, fill="black", font=font)
    for i, (row, text) in enumerate(zip(rows, labels, strict=True)):
        y = top + i * (cell_h + gap)
        draw.text((4, y + cell_h // 2 - 6), text, fill="black", font=font)
        for j, image in enumerate(np.asarray(row)):
            if image.ndim == 2:
                image = np.repeat(image[..., None], 3, axis=-1)
            pixels = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
            pixels = pixels.repeat(scale, axis=0).repeat(scale, axis=1)
            canvas.paste(Image.fromarray(pixels), (label_width + j * (cell_w + gap), y))
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def heat_map(std):
    """Returns `([n, H, W, 3] heat map, row label)` of standard deviations.

    A structured model's variance can exceed float32's range where `L` is
    badly conditioned; such pixels are shown at the top colour and counted.
    """
    finite = np.isfinite(std)
    vmax = float(np.max(std[finite])) if finite.any() else 1.0
    label = f"std of Y, 0-{vmax:.3g}"
    if not finite.all():
        label += f" ({int(np.sum(~finite))} px overflow)"
    return colormap(np.where(finite, std, vmax), vmax), label


def residual_spread(residual):
    """Returns 3 robust standard deviations of residuals: their display range.

    `3 * median |r - median r| / Phi^-1(3/4)` (Phi^-1(3/4) = 0.6745), 3
    standard deviations for Gaussian residuals, over the finite values: one
    diverging sample (after brief training, say) saturates its own panel
    instead of flattening the others to gray, as the plain standard deviation
    would.

    Args:
      residual: an array of residuals.

    Returns:
      A positive float.
    """
    values = np.asarray(residual, np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return 1.0
    mad = float(np.median(np.abs(values - np.median(values))))
    if mad > 0:
        return 3.0 * mad / 0.6744897501960817
    return float(np.max(np.abs(values))) or 1.0


def residual_image(residual, spread):
    """Maps `[n, H, W]` Y residuals to gray images: `+-spread` spans [0, 1]."""
    return np.clip(0.5 + 0.5 * residual / max(spread, 1e-12), 0.0, 1.0)
