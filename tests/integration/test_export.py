"""Exports of a real logged model (the session's finished `good` sweep) to LiteRT and
ONNX: checked on its test split and logged beside it, a tampered export refused with
nothing logged, and predict on an exported file labelling as the logged model does."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from happysad.errors import ExportRefused
from happysad.tracking.store import Store


@pytest.fixture
def good(finished_sweeps):
    """The store, the `good` sweep's best model and its run, run from the sweeps' folder."""
    cwd = os.getcwd()
    os.chdir(finished_sweeps.root)
    try:
        best = finished_sweeps.results["good"].best
        yield Store(finished_sweeps.uri), best.model_uri, best.run_id
    finally:
        os.chdir(cwd)


def _promote(store, *overrides):
    from omegaconf import OmegaConf

    from happysad.config.composition import compose
    from happysad.promote import promote

    cfg = compose([f"mlflow.tracking_uri={store.uri}", *overrides], name="promote")
    return promote(OmegaConf.to_object(cfg))


def _exported(store, run_id) -> list[str]:
    return sorted(a.path for a in store.client.list_artifacts(run_id, "export"))


def test_exports_checked_logged_and_predicting_as_the_model(good, tmp_path):
    from happysad import predict
    from happysad.export import export

    store, uri, run_id = good
    files = {}
    for fmt, quantize, suffix in [("onnx", "none", ".onnx"), ("litert", "float16", ".tflite")]:
        files[fmt] = tmp_path / f"model{suffix}"
        check, artifact = export(store, uri, fmt, quantize, output=files[fmt])
        assert check.agreement >= (0.999 if fmt == "onnx" else 0.995), check.summary()
        assert abs(check.auc - check.keras_auc) <= 0.002
        assert check.size_bytes == files[fmt].stat().st_size > 0
        assert check.latency_ms > 0 and check.keras_latency_ms > 0
        assert artifact in _exported(store, run_id)
        tags = store.client.get_run(run_id).data.tags
        assert float(tags[f"happysad.export.{check.name}.agreement"]) == pytest.approx(
            check.agreement, abs=1e-5
        )
    with pytest.raises(Exception, match="exists"):
        export(store, uri, "onnx", output=files["onnx"])  # never written over

    # The same pictures through the logged model and through each exported file.
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(12):
        path = pictures / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8), "L").save(path)
        paths.append(str(path))
    logged = predict.predict(paths, predict.load_model(uri, store.uri))
    for fmt, path in files.items():
        rows = predict.predict(paths, predict.load_model(str(path)))
        assert [r["label"] for r in rows] == [r["label"] for r in logged], fmt
        assert np.allclose(
            [r["probability"] for r in rows], [r["probability"] for r in logged], atol=0.01
        )


def test_a_tampered_export_is_refused_and_nothing_logged(good, monkeypatch):
    """Weights scaled after conversion's input is fixed: the check catches the file."""
    import keras

    from happysad import export as command
    from happysad.model.export import convert

    store, uri, run_id = good

    def tampered(model, *args, **kwargs):
        copy = keras.models.clone_model(model)
        copy.set_weights([w * 0.5 for w in model.get_weights()])
        return convert(copy, *args, **kwargs)

    monkeypatch.setattr(command, "convert", tampered)
    before = _exported(store, run_id)
    with pytest.raises(ExportRefused, match=r"nothing was logged: .*(short of|from the Keras)"):
        command.export(store, uri, "onnx")
    assert _exported(store, run_id) == before
    # At promotion: refused before the version is registered.
    with pytest.raises(ExportRefused):
        _promote(store, "sweep.name=good", "promote.model_name=refused", "promote.exports=[onnx]")
    assert not store.client.search_registered_models("name = 'refused'")
    assert _exported(store, run_id) == before


def test_promotion_exports_and_writes_the_model_card(good):
    """The card names the data digest and the test metrics of the version it describes."""
    store, uri, run_id = good
    decision = _promote(
        store, "sweep.name=good", "promote.model_name=carded", "promote.exports=[onnx]"
    )
    version = store.client.get_model_version("carded", decision.candidate.version)
    assert version.run_id == run_id
    card = store.read_text(run_id, "model_card.md")
    assert version.description == card
    digest = version.tags["happysad.data_digest"]
    assert f"digest `{digest}`" in card
    for metric, row in (("accuracy", "accuracy"), ("auc", "AUC")):
        value = float(version.tags[f"happysad.test_{metric}"])
        assert f"| {row} | {value:.4f} |" in card, (metric, card)
    assert "recall of sad" in card and "recall of happy" in card
    assert "No champion to compare with" in card
    assert "`export/model-onnx`: agrees with the Keras model on" in card
    assert "export/model-onnx.onnx" in _exported(store, run_id)
