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
