"""A Keras model of happysad's to a LiteRT (`.tflite`) or ONNX (`.onnx`) file.

LiteRT goes through TensorFlow's own converter from a SavedModel of the inference
function (its `concrete function` path leaves the variables unfrozen and fails to
calibrate; `model.export` keeps the augmentation's random ops, which LiteRT lacks).
ONNX goes through tf2onnx on the same serving function. Both take float32 input of
the model's shape (the uint8 pixel values, as the Keras model does) and give P(happy).
`float16` stores the weights in half precision; `int8` quantizes weights and
activations (inputs and outputs stay float32), calibrated on images of the training
split. The preprocessing settings are written into the file (see serving.exported).
"""

from __future__ import annotations

import json
import tempfile
from typing import Any

import numpy as np

from happysad.errors import ConfigError
from happysad.serving.exported import METADATA

FORMATS = ("litert", "onnx")
QUANTIZE = ("none", "float16", "int8")
SUFFIX = {"litert": ".tflite", "onnx": ".onnx"}
# Training images that calibrate an int8 model: on a FER2013 model, 200 gave 99.40% of
# test decisions agreeing with Keras (refused), 1,000 gave 99.66% (benchmarks/README.md).
CALIBRATION = 1000
ONNX_OPSET = 17


def check_choice(fmt: str, quantize: str) -> None:
    """A ConfigError in one sentence for a format or quantization not offered."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: the export formats are {', '.join(FORMATS)}")
    if quantize not in QUANTIZE:
        raise ConfigError(f"--quantize {quantize}: choose one of {', '.join(QUANTIZE)}")
    if fmt == "onnx" and quantize != "none":
        raise ConfigError(
            f"--quantize {quantize} is for --format litert: ONNX exports are float32 "
            "(--quantize none)"
        )


def convert(
    model: Any,
    fmt: str,
    quantize: str = "none",
    calibration: np.ndarray | None = None,
    settings: dict[str, Any] | None = None,
) -> bytes:
    """The exported file's bytes, with `settings` written in them."""
    check_choice(fmt, quantize)
    if fmt == "litert":
        content = _litert(model, quantize, calibration)
    else:
        content = _onnx(model)
    return embed(content, fmt, settings or {})


def _litert(model: Any, quantize: str, calibration: np.ndarray | None) -> bytes:
    import keras
    import tensorflow as tf

    with tempfile.TemporaryDirectory(prefix="happysad-export-") as folder:
        # The inference graph only: `model.export` keeps the augmentation layers' random
        # ops, which LiteRT has no kernels for.
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            name="serve",
            fn=lambda x: model(x, training=False),
            input_signature=[
                keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")
            ],
        )
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if calibration is None or not len(calibration):
                raise ConfigError("--quantize int8 needs training images to calibrate on")
            images = calibration.astype(np.float32)

            def representative():
                for i in range(len(images)):
                    yield [images[i : i + 1]]

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return converter.convert()


def _onnx(model: Any) -> bytes:
    import tensorflow as tf
    import tf2onnx

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="image")

    @tf.function(input_signature=[spec])
    def serve(x):
        return model(x, training=False)

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET)
    _unpad_unit_pools(proto)
    return proto.SerializeToString()


def _unpad_unit_pools(proto: Any) -> None:
    """tf2onnx keeps TensorFlow's SAME padding of a strided 1x1 pooling (the residual
    shortcut's subsampling) as auto_pad SAME_UPPER, for which onnxruntime computes a
    negative pad and refuses the file; a 1x1 window is never padded, so say pads 0."""
    from onnx import helper

    for node in proto.graph.node:
        attributes = {a.name: a for a in node.attribute}
        kernel = attributes.get("kernel_shape")
        auto = attributes.get("auto_pad")
        if (
            node.op_type in ("AveragePool", "MaxPool")
            and kernel is not None
            and all(k == 1 for k in kernel.ints)
            and auto is not None
            and auto.s.startswith(b"SAME")
        ):
            node.attribute.remove(auto)
            node.attribute.append(helper.make_attribute("pads", [0] * (2 * len(kernel.ints))))


def embed(content: bytes, fmt: str, settings: dict[str, Any]) -> bytes:
    """`content` with `settings` written in as the metadata entry `happysad`."""
    text = json.dumps(settings, sort_keys=True)
    if fmt == "onnx":
        import onnx

        proto = onnx.load_from_string(content)
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA, text
        return proto.SerializeToString()
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode(), np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA, len(model.buffers) - 1
    model.metadata = [*(model.metadata or []), entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
