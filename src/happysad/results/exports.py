"""Whether an exported model answers as its Keras model does, on the test split.

The check compares decisions (P(happy) >= 0.5) image by image, not accuracies: two
models with the same accuracy can disagree on many images. An export passes when it
agrees on at least `AGREEMENT[format]` of the test images and its AUC is within
`AUC_TOLERANCE` of the Keras model's. Size and single-image latency are reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from happysad.errors import ExportRefused
from happysad.results.evaluation import roc_auc

# The share of test decisions an export must share with its Keras model.
AGREEMENT = {"litert": 0.995, "onnx": 0.999}
AUC_TOLERANCE = 0.002
LATENCY_RUNS = 50


@dataclass
class ExportCheck:
    format: str
    quantize: str
    images: int  # test images compared
    agreement: float  # share of them with the same decision
    auc: float  # the export's test AUC
    keras_auc: float
    largest_difference: float  # of P(happy), over the test images
    size_bytes: int
    keras_size_bytes: int
    latency_ms: float  # one image, median
    keras_latency_ms: float

    @property
    def name(self) -> str:
        """litert-int8, onnx: the export's name in tags and file names."""
        return self.format if self.quantize == "none" else f"{self.format}-{self.quantize}"

    def failures(self) -> list[str]:
        """What falls short, each with by how much; empty when the export passes."""
        out = []
        wanted = AGREEMENT[self.format]
        if self.agreement < wanted:
            out.append(
                f"it agrees with the Keras model on {self.agreement:.2%} of the {self.images} "
                f"test decisions, {wanted - self.agreement:.2%} short of {wanted:.1%}"
            )
        gap = abs(self.auc - self.keras_auc)
        if not gap <= AUC_TOLERANCE:  # a NaN AUC fails too
            out.append(
                f"its test AUC {self.auc:.4f} is {gap:.4f} from the Keras model's "
                f"{self.keras_auc:.4f}, more than {AUC_TOLERANCE}"
            )
        return out

    def summary(self) -> str:
        return (
            f"{self.name}: agrees on {self.agreement:.2%} of {self.images} test decisions, "
            f"AUC {self.auc:.4f} (Keras {self.keras_auc:.4f}), "
            f"{self.size_bytes / 1024:.0f} KiB (Keras {self.keras_size_bytes / 1024:.0f} KiB), "
            f"{self.latency_ms:.2f} ms an image (Keras {self.keras_latency_ms:.2f} ms)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "name": self.name}


def compare(
    fmt: str,
    quantize: str,
    y: np.ndarray,
    keras_p: np.ndarray,
    export_p: np.ndarray,
    sizes: tuple[int, int],
    latencies: tuple[float, float],
) -> ExportCheck:
    """The check's numbers: `sizes` and `latencies` are (export, Keras)."""
    keras_p, export_p = np.ravel(keras_p), np.ravel(export_p)
    return ExportCheck(
        format=fmt,
        quantize=quantize,
        images=len(y),
        agreement=float(np.mean((keras_p >= 0.5) == (export_p >= 0.5))),
        auc=roc_auc(y, export_p),
        keras_auc=roc_auc(y, keras_p),
        largest_difference=float(np.max(np.abs(keras_p - export_p))) if len(y) else 0.0,
        size_bytes=sizes[0],
        keras_size_bytes=sizes[1],
        latency_ms=latencies[0],
        keras_latency_ms=latencies[1],
    )


def require(check: ExportCheck) -> None:
    """An ExportRefused saying by how much, unless the export passes."""
    failures = check.failures()
    if failures:
        raise ExportRefused(
            f"the {check.name} export was refused and nothing was logged: "
            + "; and ".join(failures)
        )


def latency_ms(predict: Callable[[np.ndarray], Any], image: np.ndarray) -> float:
    """The median time of one single-image call, in milliseconds (after a warm-up)."""
    batch = image[None]
    for _ in range(3):
        predict(batch)
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        predict(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000)
