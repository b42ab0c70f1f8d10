"""A minimal reproduction of a segmentation fault in TensorFlow's CPU
Conv2DBackpropFilter (oneDNN's jit 1x1 backward-weights kernel) for a 1x1 convolution
with stride 2 on an input with fewer than 16 channels, an odd batch (as a data set's
last batch often is), with more than one thread.

Run it by hand (it is not part of the test suite; it may crash the interpreter):

    python experiments/onednn-crash/reproduce.py                 # the crashing form
    python experiments/onednn-crash/reproduce.py --subsampled    # the workaround
    TF_ENABLE_ONEDNN_OPTS=0 python experiments/onednn-crash/reproduce.py

Each run computes the filter gradient `--iterations` times, each on fresh random
data, and prints "no crash" at the end; a crash ends it with exit code 139 (-11).
It needs nothing but TensorFlow and NumPy.
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument(
    "--batch", type=int, default=31, help="31: a last batch of 32 (odd sizes crash)"
)
parser.add_argument("--size", type=int, default=48, help="height and width of the input")
parser.add_argument("--channels", type=int, default=1, help="input channels (crashes below 16)")
parser.add_argument("--filters", type=int, default=32)
parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: TF's default)")
parser.add_argument("--iterations", type=int, default=200)
parser.add_argument(
    "--subsampled",
    action="store_true",
    help="the workaround: pick every other pixel first, then a stride-1 1x1 convolution",
)
args = parser.parse_args()

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

if args.threads:
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)

print(
    f"TensorFlow {tf.__version__}, oneDNN opts "
    f"{os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default (on)')}, "
    f"input ({args.batch}, {args.size}, {args.size}, {args.channels}), "
    f"1x1 kernel to {args.filters} filters, stride 2, "
    f"{'subsampled + stride 1' if args.subsampled else 'strided'}",
    flush=True,
)
rng = np.random.default_rng(0)
kernel = tf.Variable(rng.standard_normal((1, 1, args.channels, args.filters)).astype("float32"))


@tf.function
def step(x):
    with tf.GradientTape() as tape:
        if args.subsampled:
            picked = tf.nn.avg_pool2d(x, ksize=1, strides=2, padding="SAME")
            y = tf.nn.conv2d(picked, kernel, strides=1, padding="SAME")
        else:
            y = tf.nn.conv2d(x, kernel, strides=2, padding="SAME")
        loss = tf.reduce_mean(tf.square(y))
    return tape.gradient(loss, kernel)


shape = (args.batch, args.size, args.size, args.channels)
for i in range(args.iterations):
    grad = step(tf.constant(rng.random(shape, dtype=np.float32)))
    if i == 0:
        print(f"first gradient: norm {float(tf.norm(grad)):.6f}", flush=True)
print(f"no crash in {args.iterations} iterations")
sys.exit(0)
