"""Prediction speed: batch throughput from image files, and a one-image command from cold.

1. Throughput of `happysad.predict` on image files on disk (by default the shared
   FER2013 happy/sad training photos, 48x48 JPEG), through the logged model's
   python_function flavour as a user gets it. Target: at least 1,000 images per
   second on 2 cores. Shown against the bare model on the same images already
   decoded in memory, the ceiling that decoding and MLflow's wrapper eat into.
2. The time of `python -m happysad.predict one.jpg` from a cold start, against
   `python -c "import tensorflow"` in the same run, the floor of any command that
   loads a Keras model.

The model has the architecture of the default sweep's best trial (3 blocks of 64,
64 and 32 filters, Dense 256); its weights are untrained, which changes nothing of
the speed.

    python benchmarks/predict.py [--path DIR] [--images 5000] [--repeats 3]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import machine  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013-happysad" / "train"


def log_model(tmp: Path) -> tuple[str, str]:
    """A model of the default sweep's best architecture, logged as a sweep logs it."""
    import keras_tuner as kt
    import mlflow

    from happysad import tracking
    from happysad.config.composition import compose, to_typed
    from happysad.model.hypermodel import FaceHyperModel

    cfg = to_typed(
        compose(
            [
                "model.depth.value=3",
                "model.filters=[{value:64},{value:64},{value:32}]",
                "model.kernel_size.value=3",
                "model.dense_units.value=256",
                "model.dropout.value=0.2",
            ]
        )
    )
    model = FaceHyperModel(cfg, (48, 48, 1)).build(kt.HyperParameters())
    uri = f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}"
    sweep = tracking.SweepRun(
        uri, tracking.open_experiment(uri, "predict-benchmark"), "predict-benchmark"
    )
    sweep.start(
        config_yaml="",
        overrides=[],
        params={},
        data_summary={"digest": "-", "path": str(tmp)},
        skipped=[],
        search_space={},
    )
    sweep.start_trial("0", {})
    settings = {
        "preprocessing": {
            "image_size": 48,
            "color_mode": "grayscale",
            "resize": "pad",
            # A FER2013 model: faces are found in photos, and 48x48 crops pass whole.
            "faces": "crops",
            "face_detector": "mtcnn",
            "face_margin": 0.0,
        },
        "class_names": ["sad", "happy"],
        "max_pixels": 40_000_000,
    }
    model_uri = tracking.log_model(model, settings, {})
    sweep.end(tracking.FINISHED)
    mlflow.set_tracking_uri(uri)
    return uri, model_uri


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--path", type=Path, default=SHARED, help="a folder of image files")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sorted(str(p) for p in args.path.rglob("*") if p.is_file())[: args.images]
    if not files:
        sys.exit(f"no image files under {args.path}: pass --path")

    import mlflow
    import numpy as np

    from happysad import predict
    from happysad.serving.pyfunc import probabilities

    with tempfile.TemporaryDirectory(prefix="happysad-predict-") as tmp:
        uri, model_uri = log_model(Path(tmp))
        model = predict.load_model(model_uri)
        predict.predict(files[:256], model)  # warm-up: first calls trace and allocate
        from_files = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            rows = predict.predict(files, model)
            from_files.append(len(files) / (time.perf_counter() - started))
        assert sum(1 for r in rows if r["error"] is None) == len(files), (
            "every benchmark image must decode"
        )

        from happysad.serving.images import Preprocessing, open_image

        keras_model = mlflow.keras.load_model(model_uri)
        prep = Preprocessing(image_size=48)
        arrays = np.stack([prep.apply(open_image(f, 40_000_000)) for f in files])
        in_memory = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            probabilities(keras_model, arrays)
            in_memory.append(len(files) / (time.perf_counter() - started))

        one = files[0]
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        cold, floor = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "happysad.predict", one, "--model", model_uri],
                env=env,
                check=True,
                capture_output=True,
            )
            cold.append(time.perf_counter() - started)
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-c", "import tensorflow"],
                env=env,
                check=True,
                capture_output=True,
            )
            floor.append(time.perf_counter() - started)

    print(f"images: {len(files)} files under {args.path}")
    print(
        f"predict from files:     {', '.join(f'{v:.0f}' for v in from_files)} images/s; "
        f"median {statistics.median(from_files):.0f} (target: at least 1000)"
    )
    print(
        f"bare model, in memory:  {', '.join(f'{v:.0f}' for v in in_memory)} images/s; "
        f"median {statistics.median(in_memory):.0f}"
    )
    print(f"files / in memory: {statistics.median(from_files) / statistics.median(in_memory):.1%}")
    print(
        f"one-image predict command, cold: {', '.join(f'{v:.1f}' for v in cold)} s; "
        f"median {statistics.median(cold):.1f} s"
    )
    print(
        f"python -c 'import tensorflow':   {', '.join(f'{v:.1f}' for v in floor)} s; "
        f"median {statistics.median(floor):.1f} s; ratio {statistics.median(cold) / statistics.median(floor):.2f}"
    )
    print(f"machine: {machine()}; date: {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
