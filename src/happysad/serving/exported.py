"""An exported happysad model (LiteRT `.tflite`, ONNX `.onnx`) run as the logged one is.

`happysad.export` writes the model's preprocessing (the `happysad.json` of its MLflow
model) into the exported file itself: a LiteRT metadata entry, an ONNX metadata
property, both named `happysad`. So a file alone is enough to find, crop and classify
faces exactly as the Keras model does; `load` gives the same `ImageClassifier`, with the
exported network in place of the Keras one. Running a file needs `ai-edge-litert` or
`onnxruntime` (`pip install 'happysad[litert]'` or `'happysad[onnx]'`), not TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from happysad.errors import ConfigError

from .pyfunc import ImageClassifier

METADATA = "happysad"  # the name of the settings inside an exported file
FORMATS = {".tflite": "litert", ".onnx": "onnx"}  # a file's extension: its format
PACKAGES = {"litert": ("ai_edge_litert", "litert"), "onnx": ("onnxruntime", "onnx")}


def format_of(path: str | Path) -> str | None:
    """The export format a file name says (litert, onnx), or None."""
    return FORMATS.get(Path(path).suffix.lower())


def _need(fmt: str) -> None:
    module, extra = PACKAGES[fmt]
    try:
        __import__(module)
    except ImportError as err:
        raise ConfigError(
            f"running a {fmt} export needs the package {module}: pip install 'happysad[{extra}]'"
        ) from err


class LiteRT:
    """A `.tflite` file, called like the Keras model: uint8 pixels in, P(happy) out."""

    def __init__(self, content: bytes):
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=content, num_threads=1)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.batch = 0

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        if len(x) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(x), *x.shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch = len(x)
        self.interpreter.set_tensor(self.input["index"], _as(x, self.input))
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        scale, zero = self.output.get("quantization", (0.0, 0))
        if scale:  # an int8 output: back to a probability
            out = (out.astype(np.float32) - zero) * scale
        return out.astype(np.float32).reshape(len(x), -1)


def _as(x: np.ndarray, detail: dict) -> np.ndarray:
    """`x` (uint8 pixel values) in the input's type, quantized for an int8 input."""
    scale, zero = detail.get("quantization", (0.0, 0))
    if scale:
        info = np.iinfo(detail["dtype"])
        q = np.round(x.astype(np.float32) / scale + zero)
        return np.clip(q, info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"])


class Onnx:
    """An `.onnx` file, called like the Keras model."""

    def __init__(self, content: bytes):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        return self.session.run(None, {self.input: x.astype(np.float32)})[0]


def network(content: bytes, fmt: str) -> LiteRT | Onnx:
    """The network of an exported file's bytes, callable on a uint8 batch."""
    _need(fmt)
    return LiteRT(content) if fmt == "litert" else Onnx(content)


def read_settings(content: bytes, fmt: str) -> dict[str, Any] | None:
    """The happysad settings written into an exported file, or None when it has none."""
    if fmt == "litert":
        from ai_edge_litert import schema_py_generated as schema

        model = schema.Model.GetRootAsModel(bytearray(content), 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() == METADATA.encode():
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
        return None
    import onnxruntime as ort

    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"])
    text = session.get_modelmeta().custom_metadata_map.get(METADATA)
    return json.loads(text) if text is not None else None


def load(path: str | Path) -> ImageClassifier:
    """The classifier of an exported file: its network and the preprocessing written
    in it; a ConfigError in one sentence for a file that is not a happysad export."""
    fmt = format_of(path)
    if fmt is None:
        raise ConfigError(f"{path}: an exported model ends in .tflite or .onnx")
    _need(fmt)
    try:
        content = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError(
            f"{path} cannot be read ({err.strerror}): name an exported model"
        ) from err
    try:
        settings = read_settings(content, fmt)
        net = network(content, fmt)
    except Exception as err:  # noqa: BLE001 - the runtimes raise anything on a bad file
        raise ConfigError(
            f"{path} is not a {fmt} model ({type(err).__name__}): export one with "
            "python -m happysad.export"
        ) from err
    if settings is None:
        raise ConfigError(
            f"{path} is a {fmt} model but not one of happysad's (it carries no preprocessing): "
            "export one with python -m happysad.export"
        )
    return ImageClassifier(net, settings)
