"""Arithmetic of the CNN family, without TensorFlow: feature-map sizes and parameter
counts. The hypermodel uses it to refuse architectures that do not fit the images;
the preflight uses it to size the disk a sweep's models need."""

from __future__ import annotations

from typing import Any

from happysad.config.schema import Padding, space_values


def feature_side(
    image_size: int, depth: int, kernel: int, padding: Padding, convs: int = 1, residual=False
) -> int:
    """The side of the feature map after `depth` blocks of `convs` convolutions and 2x2
    pooling, which rounds up with residual shortcuts (0: nothing left)."""
    side = image_size
    for _ in range(depth):
        if padding is Padding.valid:
            side -= convs * (kernel - 1)
        if side < 1:
            return 0
        side = -(-side // 2) if residual else side // 2
        if side < 1:
            return 0
    return side


def misfit(
    image_size: int, depth: int, kernel: int, padding: Padding, convs: int = 1, residual=False
) -> str | None:
    """Why the blocks would shrink the images to nothing, or None if they fit."""
    for block in range(1, depth + 1):
        if feature_side(image_size, block, kernel, padding, convs, residual) < 1:
            return (
                f"model.depth={depth} with model.kernel_size={kernel} and "
                f"model.convs_per_block={convs} shrinks {image_size}x{image_size} images to "
                f"nothing by block {block}: lower model.depth, model.kernel_size or "
                "model.convs_per_block, use model.padding=same, or raise data.image_size"
            )
    return None


def largest_parameter_count(cfg: Any, channels: int) -> int:
    """An upper bound of the parameters of any model the search space can build."""
    m = cfg.model
    size = cfg.data.image_size
    kernels = space_values(m.kernel_size)
    blocks = m.filters
    filters = [max(space_values(space)) for space in blocks]
    units = max(space_values(m.dense_units)) if max(space_values(m.dense_layers)) else 0
    layers = max(space_values(m.dense_layers))
    # Plain convolutions bound separable ones; batch norm and shortcuts add their own.
    convs = space_values(m.convs_per_block)
    extras = True in space_values(m.batch_norm) or True in space_values(m.residual)
    largest = 0
    for depth in space_values(m.depth):
        sides = [
            feature_side(size, depth, k, m.padding, n, residual=True)
            for k in kernels
            for n in convs
        ]
        if max(sides) < 1:
            continue
        conv, c_in = 0, channels
        for f in filters[:depth]:
            conv += (max(kernels) ** 2 * c_in + 1) * f
            conv += (max(convs) - 1) * (max(kernels) ** 2 * f + 1) * f
            if extras:
                conv += c_in * f + 4 * f * (max(convs) + 1)
            c_in = f
        flat = max(sides) ** 2 * c_in
        dense = (flat + 1) * units + max(layers - 1, 0) * (units + 1) * units if layers else 0
        largest = max(largest, conv + dense + (units or flat) + 1)
    return largest
