"""Decode once: first load against cached load, and the tf.data pipeline against arrays.

On a real photo folder (by default the shared FER2013 happy/sad set, 13,537 files):

1. load time of the data set with an empty cache (every file decoded) against the
   next load (the decoded arrays read back). Target: cached at most 5% of first.
2. training throughput (images per second) of the same model fed by happysad's
   tf.data pipeline against Keras fed the same in-memory numpy arrays. Target: the
   pipeline at least 95% of the arrays.

    python benchmarks/data.py [--path DIR] [--repeats 3] [--epochs 3]

Record results in benchmarks/README.md with the machine and the date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from overhead import machine  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "fer2013-happysad"


def load_times(path: Path, repeats: int) -> tuple[list[float], list[float], object]:
    from happysad.config.schema import Fer2013DataConfig
    from happysad.data.dataset import load

    first, cached, images = [], [], None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="happysad-data-") as cache:
            cfg = Fer2013DataConfig(path=str(path), cache_dir=cache)
            started = time.perf_counter()
            images = load(cfg)
            first.append(time.perf_counter() - started)
            assert not images.from_cache
            started = time.perf_counter()
            again = load(cfg)
            cached.append(time.perf_counter() - started)
            assert again.from_cache and again.digest == images.digest
    return first, cached, images


def throughput(images, epochs: int, repeats: int) -> tuple[list[float], list[float]]:
    """Images per second over `epochs` epochs after one warm-up epoch, per feeding."""
    import keras

    from happysad.data.dataset import to_dataset

    def model() -> keras.Model:
        keras.utils.set_random_seed(0)
        inputs = keras.Input(images.input_shape)
        x = keras.layers.Rescaling(1 / 255)(inputs)
        for filters in (16, 32, 16):  # the seed network
            x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
            x = keras.layers.MaxPooling2D()(x)
        x = keras.layers.Dense(256, activation="relu")(keras.layers.Flatten()(x))
        m = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
        m.compile("adam", "binary_crossentropy", metrics=["accuracy"])
        return m

    train, batch = images.train, 64

    def timed(fit) -> float:
        fit(1)  # warm-up: tracing, first allocations
        started = time.perf_counter()
        fit(epochs)
        return epochs * len(train) / (time.perf_counter() - started)

    pipeline, arrays = [], []
    for _ in range(repeats):  # interleaved, so that drifts of a shared machine hit both
        m = model()
        ds = to_dataset(train, batch, shuffle=True, seed=0)
        pipeline.append(timed(lambda n, m=m, ds=ds: m.fit(ds, epochs=n, verbose=0, shuffle=False)))
        m = model()
        arrays.append(
            timed(
                lambda n, m=m: m.fit(
                    train.x, train.y, batch_size=batch, epochs=n, verbose=0, shuffle=True
                )
            )
        )
    return pipeline, arrays


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--path", type=Path, default=SHARED, help="a FER2013-style folder (or fer2013.csv)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not args.path.exists():
        sys.exit(f"no data at {args.path}: pass --path")

    first, cached, images = load_times(args.path, args.repeats)
    print(
        f"data: {args.path} ({sum(len(getattr(images, s)) for s in ('train', 'val', 'test'))} images kept, "
        f"{len(images.skipped)} skipped)"
    )
    print(
        f"first load  (decode every file): {', '.join(f'{t:.2f}' for t in first)} s; median {statistics.median(first):.2f} s"
    )
    print(
        f"cached load (arrays read back):  {', '.join(f'{t:.3f}' for t in cached)} s; median {statistics.median(cached):.3f} s"
    )
    print(
        f"cached / first: {statistics.median(cached) / statistics.median(first):.1%} (target: at most 5%)"
    )

    pipeline, arrays = throughput(images, args.epochs, args.repeats)
    print(
        f"training, tf.data pipeline: {', '.join(f'{v:.0f}' for v in pipeline)} images/s; "
        f"median {statistics.median(pipeline):.0f}"
    )
    print(
        f"training, numpy arrays:     {', '.join(f'{v:.0f}' for v in arrays)} images/s; "
        f"median {statistics.median(arrays):.0f}"
    )
    print(
        f"pipeline / arrays: {statistics.median(pipeline) / statistics.median(arrays):.1%} (target: at least 95%)"
    )
    print(f"machine: {machine()}; date: {datetime.date.today().isoformat()}")


if __name__ == "__main__":
    main()
