"""The residual shortcut of a block: the block's input subsampled by 2, then a 1x1
convolution to the block's width.

It is written as two layers, a 1x1 average pooling with stride 2 (which only picks
every other pixel) and a 1x1 convolution with stride 1, instead of one strided 1x1
convolution, which computes the same: the strided form's gradient crashes TensorFlow
with a segmentation fault on CPUs where oneDNN runs it (the jit 1x1 backward-weights
kernel, inputs of fewer than 16 channels, an odd batch such as a data set's last, more
than one thread; upstream uxlfoundation/oneDNN#6035, experiments/onednn-crash/). Models
and backbones saved with the strided form still load as they are; `unstrided` rewrites
a backbone into this form before it is trained again.
"""

from __future__ import annotations

SUBSAMPLE = "_subsample"  # the pooling's name: the convolution's plus this


def subsampled(x, filters: int, name: str):
    """`x` subsampled by 2 (an odd side keeps its last row, as "same" pooling does)
    and mapped to `filters` channels by a 1x1 convolution named `name`."""
    from keras import layers

    x = layers.AveragePooling2D(1, strides=2, padding="same", name=f"{name}{SUBSAMPLE}")(x)
    return layers.Conv2D(filters, 1, padding="same", use_bias=False, name=name)(x)


def unstrided(model):
    """`model` (a functional Keras model) with each strided 1x1 convolution replaced
    by the subsampling and a stride-1 convolution with the same weights: the same
    outputs, without the gradient that crashes. `model` itself if it has none."""
    import keras

    strided = {
        id(layer)
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D)
        and type(layer) is keras.layers.Conv2D
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) != (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
    }
    if not strided:
        return model
    replaced = {}

    def clone(layer):
        if id(layer) not in strided:
            return layer  # the loaded layer itself, weights and all
        config = {**layer.get_config(), "strides": (1, 1)}
        new = keras.layers.Conv2D.from_config(config)
        replaced[id(new)] = layer
        return new

    def call(layer, *args, **kwargs):
        old = replaced.get(id(layer))
        if old is None:
            return layer(*args, **kwargs)
        x = keras.layers.AveragePooling2D(
            1, strides=old.strides, padding=old.padding, name=f"{old.name}{SUBSAMPLE}"
        )(args[0])
        return layer(x, *args[1:], **kwargs)

    rewritten = keras.models.clone_model(model, clone_function=clone, call_function=call)
    for layer in rewritten.layers:
        old = replaced.get(id(layer))
        if old is not None:
            layer.set_weights(old.get_weights())
            layer.trainable = old.trainable
    return rewritten
