"""Describing models without external profilers: parameters, multiply-adds, depth, diagrams.

Multiply-adds (MACs) are counted from the layers themselves, for one image:

* ``Conv2D``: ``out_h * out_w * k_h * k_w * in_c * out_c / groups``
* ``DepthwiseConv2D``: ``out_h * out_w * k_h * k_w * in_c * depth_multiplier``
* ``SeparableConv2D``: its depthwise part plus a 1x1 pointwise conv
* ``Dense``: ``in_features * units`` (times the positions, if applied to a feature map)

Everything else (BN, activations, pooling, additions, concatenations, bias adds) is left
out, as is usual in papers' FLOP tables; those are a small fraction of the total.

Depth is the number of weight layers (conv + dense) on the *longest* input-to-output path,
which is how papers name their nets (ResNet-20 has 20, not counting its projection
shortcuts; GoogLeNet 22; DenseNet-BC 100); the total number of weight layers is reported
beside it.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import pathlib
import re
from typing import Iterable, Sequence

import keras

from components.models.registry import create_model, list_models, model_info

WEIGHT_LAYER_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Dense,
)


# --------------------------------------------------------------------------- counting
def layer_macs(layer: keras.layers.Layer) -> int:
    """Multiply-adds of one layer for one image (0 for layers without weights)."""
    if not isinstance(layer, WEIGHT_LAYER_TYPES):
        return 0
    out_shape = layer.output.shape
    in_channels = layer.input.shape[-1]
    positions = math.prod(out_shape[1:-1])  # output pixels (or 1 for a Dense on a vector)
    if isinstance(layer, keras.layers.Dense):
        return positions * in_channels * layer.units
    k_h, k_w = layer.kernel_size
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return positions * k_h * k_w * in_channels * layer.depth_multiplier
    if isinstance(layer, keras.layers.SeparableConv2D):
        depthwise_channels = in_channels * layer.depth_multiplier
        return positions * (k_h * k_w * depthwise_channels + depthwise_channels * layer.filters)
    return positions * k_h * k_w * (in_channels // layer.groups) * layer.filters


def count_macs(model: keras.Model) -> int:
    """Total multiply-adds of ``model`` for one image."""
    return sum(layer_macs(layer) for layer in model.layers)


def count_weight_layers(model: keras.Model) -> int:
    """Number of conv and dense layers."""
    return sum(isinstance(layer, WEIGHT_LAYER_TYPES) for layer in model.layers)


def count_depth(model: keras.Model) -> int:
    """Weight layers on the longest input-to-output path of a functional model."""
    depth: dict[str, int] = {}
    # Functional models list their layers in topological order, so parents come first.
    for layer in model.layers:
        parents = [node.operation.name for node in layer._inbound_nodes[0].parent_nodes]
        own = 1 if isinstance(layer, WEIGHT_LAYER_TYPES) else 0
        depth[layer.name] = own + max((depth[p] for p in parents), default=0)
    return max(depth[t._keras_history.operation.name] for t in model.outputs)


# --------------------------------------------------------------------------- table
@dataclasses.dataclass(frozen=True)
class ModelRow:
    """One line of the model table."""

    name: str
    family: str
    params: int
    macs: int
    depth: int
    weight_layers: int
    paper: str


def describe(model: keras.Model, name: str) -> ModelRow:
    """Table row of an already-built registered model."""
    info = model_info(name)
    return ModelRow(
        name=name,
        family=info.family,
        params=model.count_params(),
        macs=count_macs(model),
        depth=count_depth(model),
        weight_layers=count_weight_layers(model),
        paper=info.paper,
    )


def model_rows(
    input_shape: Sequence[int],
    num_classes: int,
    names: Iterable[str] | None = None,
) -> list[ModelRow]:
    """Build each model (default: all registered) for ``input_shape`` and describe it."""
    rows = []
    for name in names if names is not None else list_models():
        model = create_model(name, tuple(input_shape), num_classes)
        rows.append(describe(model, name))
        del model
        keras.backend.clear_session()  # keep memory flat while building 30 models
    return rows


def _human(count: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def format_table(rows: Sequence[ModelRow]) -> str:
    """A plain-text table: name, family, params, MACs/image, depth, weight layers, paper."""
    header = ("model", "family", "params", "MACs/image", "depth", "weight layers", "paper")
    lines = [
        (r.name, r.family, f"{r.params:,}", _human(r.macs), str(r.depth), str(r.weight_layers), r.paper)
        for r in rows
    ]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    right = {2, 3, 4, 5}  # numbers are right-aligned

    def render(cells):
        padded = (c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


# --------------------------------------------------------------------------- diagrams
def layer_group(layer_name: str) -> str:
    """The block a layer belongs to, from its fixed name.

    ``stage2_block1_conv1`` -> ``stage2_block1``; ``inception3a_branch2_3x3_conv`` ->
    ``inception3a``; ``block1_layer3_1x1_conv`` -> ``block1``; ``fc1`` -> ``fc1``.
    """
    parts = layer_name.split("_")
    if len(parts) >= 3 and re.fullmatch(r"(block|inception)\d+\w*", parts[1]):
        return "_".join(parts[:2])
    return parts[0]


def graphviz_available() -> bool:
    """True when ``keras.utils.plot_model`` can run (pydot and the graphviz binaries)."""
    if importlib.util.find_spec("pydot") is None:
        return False
    import pydot

    try:
        pydot.Dot.create(pydot.Dot())
    except (OSError, pydot.PydotException, FileNotFoundError):
        return False
    return True


def plot_model_diagram(model: keras.Model, path: str | pathlib.Path) -> str:
    """Write a diagram of ``model`` to ``path`` and say how it was drawn.

    Uses ``keras.utils.plot_model`` when graphviz is installed; otherwise draws a block
    diagram with matplotlib (one box per block from :func:`layer_group`, with its output
    shape and parameters); without matplotlib, writes ``model.summary()`` as text next to
    ``path`` (suffix ``.txt``). Returns a sentence naming the method and the file written.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if graphviz_available():
        keras.utils.plot_model(model, to_file=str(path), show_shapes=True, show_layer_names=True)
        return f"wrote {path} with keras.utils.plot_model (graphviz)"
    if importlib.util.find_spec("matplotlib") is not None:
        _plot_blocks(model, path)
        return (f"graphviz is not installed, so keras.utils.plot_model cannot run; "
                f"wrote a matplotlib block diagram (one box per block) to {path}")
    text_path = path.with_suffix(".txt")
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line), line_length=120)
    text_path.write_text("\n".join(lines) + "\n")
    return f"neither graphviz nor matplotlib is installed; wrote a text summary to {text_path}"


def _blocks_of(model: keras.Model) -> list[tuple[str, str, int]]:
    """(block name, output shape, parameters) per block, in graph order."""
    groups: dict[str, list[keras.layers.Layer]] = {}
    for layer in model.layers:
        groups.setdefault(layer_group(layer.name), []).append(layer)
    result = []
    for group, layers in groups.items():
        shape = "x".join(str(d) for d in layers[-1].output.shape[1:])
        result.append((group, shape, sum(layer.count_params() for layer in layers)))
    return result


def _plot_blocks(model: keras.Model, path: pathlib.Path, per_column: int = 40) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    boxes = _blocks_of(model)
    columns = math.ceil(len(boxes) / per_column)
    rows = min(len(boxes), per_column)
    fig, ax = plt.subplots(figsize=(4.2 * columns, 0.45 * rows + 1.2))
    ax.set_xlim(0, columns)
    ax.set_ylim(rows, -1)
    ax.axis("off")
    ax.set_title(f"{model.name}: {model.count_params():,} parameters, {count_macs(model):,} MACs/image", fontsize=9)
    for index, (group, shape, params) in enumerate(boxes):
        column, row = divmod(index, per_column)
        is_weight_block = params > 0
        ax.add_patch(plt.Rectangle((column + 0.05, row + 0.1), 0.9, 0.75, fill=True,
                                   facecolor="#cfe2f3" if is_weight_block else "#eeeeee", edgecolor="black"))
        ax.text(column + 0.5, row + 0.5, f"{group}  [{shape}]  {params:,} p", ha="center", va="center", fontsize=7)
        if row + 1 < rows and index + 1 < len(boxes):
            ax.annotate("", xy=(column + 0.5, row + 1.1), xytext=(column + 0.5, row + 0.85),
                        arrowprops=dict(arrowstyle="->", lw=0.6))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
