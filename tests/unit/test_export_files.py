"""The export command's bad input, and exported files that are not happysad's: one
sentence each, exit status 2, before any store is opened or model loaded."""

from __future__ import annotations

import numpy as np
import pytest

from happysad import export, predict
from happysad.errors import ConfigError, ExportRefused
from happysad.results.exports import compare, require
from happysad.serving import exported


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--format", "tflite2"], "--format tflite2: the export formats are litert, onnx"),
        (["--format", "litert", "--quantize", "int4"], "--quantize int4: choose one of"),
        (["--format", "onnx", "--quantize", "int8"], "is for --format litert"),
    ],
)
def test_bad_choices_say_so_in_one_sentence(args, said, capsys, tmp_path):
    uri = f"sqlite:///{tmp_path / 'never' / 'mlflow.db'}"
    assert export.main([*args, "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert said in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists(), "nothing was opened or created"


def test_files_that_are_not_happysad_exports_are_refused(tmp_path, capsys):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ConfigError, match="is not a litert model"):
        exported.load(junk)
    assert predict.main([str(junk), "--model", str(junk)]) == 2
    assert "is not a litert model" in capsys.readouterr().err

    import onnx
    from onnx import TensorProto, helper

    # A real ONNX model, but not one of happysad's: no preprocessing in it.
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    other = tmp_path / "other.onnx"
    other.write_bytes(helper.make_model(graph).SerializeToString())
    onnx.checker.check_model(str(other))
    with pytest.raises(ConfigError, match="not one of happysad's"):
        exported.load(other)


def test_the_check_says_by_how_much():
    y = np.array([0, 1] * 100, float)
    keras_p = np.linspace(0.1, 0.9, 200)
    same = compare("onnx", "none", y, keras_p, keras_p + 1e-6, (10, 20), (1.0, 2.0))
    require(same)  # passes
    flipped = keras_p.copy()
    flipped[95:105] = 1 - flipped[95:105]  # ten decisions near 0.5 change
    check = compare("litert", "int8", y, keras_p, flipped, (10, 20), (1.0, 2.0))
    assert check.agreement == pytest.approx(0.95)
    with pytest.raises(ExportRefused, match=r"95\.00% of the 200 test decisions, 4\.50% short"):
        require(check)


def test_an_onnx_export_of_a_strided_one_pixel_pooling_runs_as_keras_does():
    """The residual shortcut's subsampling (a 1x1 pooling of stride 2, SAME padding) on
    feature maps whose size the graph does not fix (as behind test_time_flip's mirror):
    tf2onnx writes it in a form onnxruntime refuses unless it is fixed."""
    import keras

    from happysad.model.export import convert

    inputs = keras.Input((None, None, 1), name="image")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.AveragePooling2D(pool_size=1, strides=2, padding="same")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    pixels = np.random.default_rng(0).integers(0, 255, (8, 6, 6, 1)).astype(np.uint8)
    content = convert(model, "onnx", settings={"class_names": ["sad", "happy"]})
    assert exported.read_settings(content, "onnx") == {"class_names": ["sad", "happy"]}
    ours = exported.network(content, "onnx")(pixels)
    assert np.allclose(ours, np.asarray(model(pixels.astype("float32"))), atol=1e-5)
