"""Exports of a logged model: agreement with the Keras model, size, latency, throughput.

For the best model of a sweep (--sweep NAME, by its parent run's tag
`happysad.best_model_uri`) or --model URI, in the store of MLFLOW_TRACKING_URI:

1. Each export (LiteRT none, float16, int8; ONNX) made as `happysad.export` makes it,
   and compared with the Keras model on the sweep's test split (rebuilt, digest
   checked): decisions agreeing, test AUC of both, largest difference of P(happy), file
   sizes (the Keras file as logged), median single-image latency (50 calls after a
   warm-up). Targets (issue 25): LiteRT int8 at most a third of the Keras file, agreement
   >= 99.5%; ONNX >= 99.9%; AUC within 0.002. Nothing is logged.
2. `happysad.predict.predict` on --images test images written as PNG files, through
   the logged model's python_function flavour and through each exported file (the
   median of --repeats runs, pictures a second): the target is an export at least as
   fast as Keras.

    MLFLOW_TRACKING_URI=... python benchmarks/export.py --sweep NAME [--images 2000] [--repeats 3]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import machine  # noqa: E402

ARMS = [("litert", "none"), ("litert", "float16"), ("litert", "int8"), ("onnx", "none")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sweep")
    parser.add_argument("--model")
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    from PIL import Image

    from happysad import predict
    from happysad.export import _sample
    from happysad.model.export import CALIBRATION, SUFFIX, convert
    from happysad.results.exports import compare, latency_ms
    from happysad.results.splits import sweep_images, sweep_of
    from happysad.serving.exported import network
    from happysad.serving.pyfunc import probabilities
    from happysad.tracking.exports import fetch
    from happysad.tracking.store import Store

    store = Store.existing(None)
    uri = args.model
    if uri is None:
        sweep = store.find_sweeps(store.experiment_id("happysad"), args.sweep)[0]
        uri = sweep.data.tags["happysad.best_model_uri"]
    print(machine())
    print(f"model {uri}")
    with tempfile.TemporaryDirectory(prefix="export-bench-") as tmp:
        tmp = Path(tmp)
        source = fetch(store, uri, tmp / "model")
        images = sweep_images(store, sweep_of(store, source.run_id))
        test = images.test
        model = keras.saving.load_model(source.keras_file, compile=False)
        keras_p = probabilities(model, test.x)
        keras_size = source.keras_file.stat().st_size
        keras_ms = latency_ms(lambda x: model(x, training=False), test.x[0])
        print(f"test split: {len(test)} images; Keras file {keras_size / 1024:.0f} KiB")
        print(
            "| export | agreement | AUC (Keras) | largest difference | size (of Keras) | ms an image (Keras) | convert s |"
        )
        print("|---|---|---|---|---|---|---|")
        files = {}
        for fmt, quantize in ARMS:
            start = time.perf_counter()
            calibration = _sample(images.train, CALIBRATION) if quantize == "int8" else None
            content = convert(model, fmt, quantize, calibration, source.settings)
            seconds = time.perf_counter() - start
            net = network(content, fmt)
            check = compare(
                fmt,
                quantize,
                test.y,
                keras_p,
                probabilities(net, test.x),
                (len(content), keras_size),
                (latency_ms(net, test.x[0]), keras_ms),
            )
            verdict = "passes" if not check.failures() else "REFUSED"
            print(
                f"| {check.name} | {check.agreement:.2%} ({verdict}) | {check.auc:.4f} "
                f"({check.keras_auc:.4f}) | {check.largest_difference:.4f} | "
                f"{len(content) / 1024:.0f} KiB ({len(content) / keras_size:.2f}) | "
                f"{check.latency_ms:.2f} ({keras_ms:.2f}) | {seconds:.1f} |"
            )
            path = tmp / f"model-{check.name}{SUFFIX[fmt]}"
            path.write_bytes(content)
            files[check.name] = path

        folder = tmp / "pictures"
        folder.mkdir()
        paths = []
        for i in range(min(args.images, len(test))):
            path = folder / f"{i:05d}.png"
            Image.fromarray(test.x[i].squeeze()).save(path)
            paths.append(str(path))
        models = {"keras (pyfunc)": predict.load_model(uri, store.uri)}
        models.update({name: predict.load_model(str(path)) for name, path in files.items()})
        print(f"\npredict on {len(paths)} PNG files, pictures a second (median of {args.repeats}):")
        labels = {}
        for name, loaded in models.items():
            rates = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                rows = predict.predict(paths, loaded)
                rates.append(len(paths) / (time.perf_counter() - start))
            labels[name] = [r["label"] for r in rows]
            same = np.mean(
                [a == b for a, b in zip(labels[name], labels["keras (pyfunc)"], strict=True)]
            )
            print(
                f"  {name}: {statistics.median(rates):,.0f} /s ({', '.join(f'{r:,.0f}' for r in rates)}); labels as Keras: {same:.2%}"
            )


if __name__ == "__main__":
    main()
