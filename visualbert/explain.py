"""Where the answer looked: the image with each region shaded by the attention it got.

The weights come from :meth:`visualbert.pipelines.VisualQuestionAnswering.answer` with
``explain=True``: the last layer's attention from [CLS] and the question's tokens to each region,
averaged over heads and tokens. Grid features (regions tiling the image) are drawn as a heat map
over the cells; boxes as rectangles whose outline and fill strength follow their weight; features given without
their image (``ask --features`` alone) as one bar per region. The title holds the question and the
top answers.
"""
import io
import textwrap

import numpy as np

from .atomic import write_file

__all__ = ["draw_attention", "render_png"]


def _is_grid(geometry):
    """True when the regions tile the image without overlap (a grid), so a heat map shows them best."""
    area = float((geometry[:, 4] * geometry[:, 5]).sum())
    return abs(area - 1.0) < 1e-3 and np.allclose(geometry[:, 4], geometry[0, 4]) and np.allclose(geometry[:, 5], geometry[0, 5])


def _draw_on_image(fig, ax, image, geometry, weights):
    """The image, then a heat map over grid cells or a shaded rectangle per box."""
    from matplotlib.patches import Rectangle

    height, width = image.shape[:2]
    ax.imshow(image)
    ax.set_axis_off()
    if geometry is None or len(geometry) != len(weights):
        return
    peak = float(weights.max()) or 1.0
    if _is_grid(geometry):
        n_x = int(round(1.0 / geometry[0, 4]))
        n_y = int(round(1.0 / geometry[0, 5]))
        heat = np.zeros((n_y, n_x), dtype=np.float32)
        for (x1, y1, _, _, _, _), w in zip(geometry, weights):
            heat[min(int(round(y1 * n_y)), n_y - 1), min(int(round(x1 * n_x)), n_x - 1)] = w
        shown = ax.imshow(heat, cmap="inferno", alpha=0.55, extent=(0, width, height, 0), interpolation="nearest",
                          vmin=float(weights.min()), vmax=peak)
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="share of attention")
        return
    for (x1, y1, x2, y2, _, _), w in sorted(zip(geometry, weights), key=lambda gw: gw[1]):
        strength = float(w) / peak
        ax.add_patch(Rectangle((x1 * width, y1 * height), (x2 - x1) * width, (y2 - y1) * height,
                               facecolor=(1.0, 0.3, 0.0, 0.35 * strength), edgecolor=(1.0, 0.2, 0.0, strength),
                               linewidth=0.5 + 2.5 * strength))


def _figure(image, geometry, weights, question, answers):
    from matplotlib.figure import Figure  # not pyplot: no display, no global state


    weights = np.asarray(weights, dtype=np.float32)
    fig = Figure(figsize=(6, 6.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    if image is None:  # features from a store without the picture: one bar per region
        ax.bar(np.arange(1, len(weights) + 1), weights, color="#3366cc")
        ax.set_xticks(np.arange(1, len(weights) + 1))
        ax.set_xlabel("region")
        ax.set_ylabel("share of attention")
    else:
        _draw_on_image(fig, ax, np.asarray(image.convert("RGB")), geometry, weights)
    top = ", ".join(f"{a['answer']} {a['score']:.2f}" for a in answers[:3])
    ax.set_title("\n".join(textwrap.wrap(f"Q: {question}", 60) + [f"A: {top}"]), fontsize=10)
    fig.tight_layout()
    return fig


def render_png(image, geometry, weights, question, answers):
    """The picture as PNG bytes (what the web page shows)."""
    buf = io.BytesIO()
    _figure(image, geometry, weights, question, answers).savefig(buf, format="png")
    return buf.getvalue()


def draw_attention(path, image, geometry, weights, question, answers):
    """Write the picture to ``path`` (PNG) atomically; returns ``path``."""
    data = render_png(image, geometry, weights, question, answers)
    return write_file(path, lambda f: f.write(data), binary=True)
