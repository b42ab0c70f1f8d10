"""`python -m happysad.export [--model URI] --format litert|onnx [--quantize none|float16|int8]
[--output FILE]`

Export a logged happysad model (the champion by default) to a file that runs on phones
and edge boxes: LiteRT (`.tflite`, TensorFlow Lite's runtime) or ONNX. The exported
file is checked before anything is logged: on the held-out test split of the model's
sweep (rebuilt and checked against its recorded digest), its decisions must agree with
the Keras model's on at least 99.5% of the images (99.9% for ONNX) and its AUC be
within 0.002; `int8` is calibrated on images of the training split. A file that passes
is logged beside the Keras model on the same run (artifacts `export/`, with its check
as `export/NAME.check.json` and tags `happysad.export.NAME.*`); one that fails says by
how much and logs nothing (exit status 1). Size and single-image latency are reported.

`python -m happysad.predict --model FILE.tflite|FILE.onnx` runs an exported file with
the same preprocessing and face finding as the logged model: they are written in it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from happysad.data.dataset import Split  # noqa: E402
from happysad.errors import ConfigError, DataError, HappysadError  # noqa: E402
from happysad.model.export import (  # noqa: E402
    CALIBRATION,
    FORMATS,
    QUANTIZE,
    SUFFIX,
    check_choice,
    convert,
)
from happysad.results.exports import ExportCheck, compare, latency_ms, require  # noqa: E402
from happysad.results.splits import sweep_images, sweep_of  # noqa: E402
from happysad.serving.exported import network  # noqa: E402
from happysad.serving.pyfunc import probabilities  # noqa: E402
from happysad.tracking.exports import Source, fetch, log_export  # noqa: E402
from happysad.tracking.store import (  # noqa: E402
    Store,
    add_store_option,
    resolve_tracking_uri,
    without_credentials,
)

DEFAULT_MODEL = "models:/happysad@champion"

log = logging.getLogger("happysad")


@dataclass
class Prepared:
    """An export that passed its check, not logged yet."""

    source: Source
    check: ExportCheck
    content: bytes


def parse_spec(spec: str) -> tuple[str, str]:
    """`litert`, `litert:int8`, `onnx` (promote.exports' items): format and quantization."""
    fmt, _, quantize = spec.partition(":")
    check_choice(fmt, quantize or "none")
    return fmt, quantize or "none"


def prepare(store: Store, uri: str, fmt: str, quantize: str, work: Path) -> Prepared:
    """The model at `uri` converted and checked on its sweep's test split; raises
    ExportRefused (by how much) when the file does not answer as the model does."""
    import keras

    check_choice(fmt, quantize)
    source = fetch(store, uri, work / "model")
    images = sweep_images(store, sweep_of(store, source.run_id))
    calibration = None
    if quantize == "int8":
        if not len(images.train):
            raise DataError(
                f"--quantize int8 calibrates on the training split, and the sweep of {uri} "
                "has none: export with --quantize none or float16"
            )
        calibration = _sample(images.train, CALIBRATION)
    model = keras.saving.load_model(source.keras_file, compile=False)
    settings = {
        **source.settings,
        "export": {"format": fmt, "quantize": quantize, "model": uri, "run_id": source.run_id},
    }
    content = convert(model, fmt, quantize, calibration, settings)
    check = judge(model, content, fmt, quantize, images.test, source.keras_file.stat().st_size)
    return Prepared(source, check, content)


def judge(model, content: bytes, fmt: str, quantize: str, test: Split, keras_size: int):
    """The exported file's check against `model` on `test`; ExportRefused if it fails."""
    net = network(content, fmt)
    check = compare(
        fmt,
        quantize,
        test.y,
        probabilities(model, test.x),
        probabilities(net, test.x),
        sizes=(len(content), keras_size),
        latencies=(
            latency_ms(net, test.x[0]),
            latency_ms(lambda x: model(x, training=False), test.x[0]),
        ),
    )
    require(check)
    return check


def _sample(split: Split, count: int):
    """Up to `count` training images, the same ones every time."""
    import numpy as np

    order = np.random.default_rng(0).permutation(len(split))[:count]
    return split.x[np.sort(order)]


def file_name(check: ExportCheck) -> str:
    return f"model-{check.name}{SUFFIX[check.format]}"


def exports_of(store: Store, uri: str, specs: list[tuple[str, str]]) -> list[Prepared]:
    """The model at `uri` exported as each (format, quantize) of `specs`, every one
    checked; the first that fails raises ExportRefused."""
    out = []
    for fmt, quantize in specs:
        with tempfile.TemporaryDirectory(prefix="happysad-export-") as tmp:
            out.append(prepare(store, uri, fmt, quantize, Path(tmp)))
    return out


def record(store: Store, prepared: Prepared) -> str:
    """A checked export logged on its model's run; its artifact path."""
    with tempfile.TemporaryDirectory(prefix="happysad-export-") as tmp:
        path = Path(tmp) / file_name(prepared.check)
        path.write_bytes(prepared.content)
        return log_export(store, prepared.source.run_id, path, prepared.check.to_dict())


def export(
    store: Store, uri: str, fmt: str, quantize: str = "none", output: Path | None = None
) -> tuple[ExportCheck, str]:
    """Convert, check, log (and write to `output`): the check and the artifact path."""
    if output is not None and (output.exists() or output.is_symlink()):
        raise ConfigError(f"--output {output} exists: name a new file (none is written over)")
    if output is not None and output.suffix.lower() != SUFFIX.get(fmt, output.suffix):
        raise ConfigError(f"--output {output}: a {fmt} file ends in {SUFFIX[fmt]}")
    (prepared,) = exports_of(store, uri, [(fmt, quantize)])
    artifact = record(store, prepared)
    if output is not None:
        output.write_bytes(prepared.content)
    return prepared.check, artifact


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m happysad.export",
        description="Export a logged happysad model to LiteRT or ONNX, checked on its test split.",
    )
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help=f"an MLflow model URI (default {DEFAULT_MODEL})"
    )
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument(
        "--quantize", default="none", help=f"one of {', '.join(QUANTIZE)} (default none)"
    )
    parser.add_argument("--output", type=Path, help="also write the exported file here")
    add_store_option(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        # Checked before the store is opened or TensorFlow loaded.
        check_choice(args.format, args.quantize)
        uri = resolve_tracking_uri(args.tracking_uri)
        print(f"MLflow store: {without_credentials(uri)}", file=sys.stderr)
        check, artifact = export(
            Store.existing(uri), args.model, args.format, args.quantize, args.output
        )
    except HappysadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError | DataError) else 1
    print(check.summary())
    print(f"logged as {artifact} on the run of {args.model}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
