"""Generate the ONNX models bundled with ward, or check that the committed ones are current.

ward's tests and demos serve these models, so they are committed to the repository and
this script is the single, reproducible way to make them:

  digits 1.0.0, 1.1.0  MLP classifiers (32 and 64 hidden units) on scikit-learn's bundled
                       8x8 digits; both score >= 0.95 on a fixed held-out split.
                       input float32[N, 64] (raw pixels 0..16)
                       -> label int64[N], probabilities float32[N, 10]
  digit_image 1.0.0    the digits 1.1.0 network behind a frame input: ward decodes a picture
                       of a digit, shrinks it to 8x8 and scales it to 0..16 (see its model.yaml);
                       samples/ holds pictures of held-out digits (PNG, and one JPEG).
  cnn 1.0.0            a small conv net with seeded random weights: a compute-bound
                       workload taking a few milliseconds per image on one core.
                       input float32[N, 3, 64, 64] -> logits float32[N, 10]

Generation is deterministic: running it twice writes byte-identical files. `--check`
regenerates into a temporary directory, requires the committed files to match byte for
byte, and then verifies interfaces and accuracy with onnxruntime.

Usage, from the repository root with the packages in models/requirements.txt:

    python models/generate.py           # (re)write models/*/*/weights/model.onnx
    python models/generate.py --check   # verify the committed files; exit 1 on mismatch
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MODELS_DIR = Path(__file__).resolve().parent
# A test fixture, not a bundled model: it lives with the integration tests.
IDENTITY_DIR = MODELS_DIR.parent / "tests" / "fixtures" / "models"
OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17
BATCH = "N"
MIN_ACCURACY = 0.95

# Hidden units per digits version. Seed 4 makes the wider 1.1.0 the more accurate one.
DIGITS_HIDDEN = {"1.0.0": 32, "1.1.0": 64}
DIGITS_SEED = 4

# cnn: (output channels, stride) of each 3x3 Conv+Relu layer, then pool and a 10-way Gemm.
CNN_LAYERS = [(32, 1), (32, 1), (32, 1), (32, 1), (64, 2), (64, 1), (64, 1), (64, 1), (128, 2)]
CNN_SEED = 20240601

# digit_image reuses this digits version; its samples are held-out digits drawn at this size.
DIGIT_IMAGE_SOURCE = "1.1.0"
DIGIT_IMAGE_SIDE = 32

DIGITS_INTERFACE = (
    {"input": ("tensor(float)", [BATCH, 64])},
    {"label": ("tensor(int64)", [BATCH]), "probabilities": ("tensor(float)", [BATCH, 10])},
)
CNN_INTERFACE = (
    {"input": ("tensor(float)", [BATCH, 3, 64, 64])},
    {"logits": ("tensor(float)", [BATCH, 10])},
)


class CheckFailed(Exception):
    """A model does not meet its interface or accuracy requirement."""


def require(condition, message):
    if not condition:
        raise CheckFailed(message)


def model_path(root, name, version):
    return root / name / version / "weights" / "model.onnx"


def digits_split():
    """The fixed train/held-out split. Pixels are small integers, exact in float32.

    Training runs in float64 so that the files reproduce on other CPUs too: different BLAS
    kernels then disagree only in the last float64 bits, which rounding the weights to
    float32 on export hides (float32 training lets the disagreement grow into the weights).
    """
    x, y = load_digits(return_X_y=True)
    return train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)


def train_digits(hidden):
    x_train, x_test, y_train, y_test = digits_split()
    classifier = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=500, random_state=DIGITS_SEED)
    pipeline = make_pipeline(StandardScaler(), classifier).fit(x_train, y_train)
    accuracy = pipeline.score(x_test, y_test)
    require(
        accuracy >= MIN_ACCURACY, f"digits MLP({hidden}) accuracy {accuracy:.4f} < {MIN_ACCURACY}"
    )
    return pipeline


def export_digits(pipeline):
    return to_onnx(
        pipeline,
        initial_types=[("input", FloatTensorType([None, 64]))],
        target_opset={"": OPSET, "ai.onnx.ml": 1},
        options={"zipmap": False},
    )


def conv_relu(rng, name, source, in_channels, out_channels, stride):
    """A 3x3 same-padded Conv with He-scaled weights, followed by Relu."""
    std = np.sqrt(2.0 / (in_channels * 9))
    weight = (rng.standard_normal((out_channels, in_channels, 3, 3)) * std).astype(np.float32)
    initializers = [
        numpy_helper.from_array(weight, f"{name}.weight"),
        numpy_helper.from_array(np.zeros(out_channels, np.float32), f"{name}.bias"),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            [source, f"{name}.weight", f"{name}.bias"],
            [f"{name}.conv"],
            name=f"{name}.conv",
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[stride, stride],
        ),
        helper.make_node("Relu", [f"{name}.conv"], [f"{name}.relu"], name=f"{name}.relu"),
    ]
    return nodes, initializers, f"{name}.relu"


def build_cnn():
    rng = np.random.default_rng(CNN_SEED)
    nodes, initializers = [], []
    source, channels = "input", 3
    for index, (out_channels, stride) in enumerate(CNN_LAYERS):
        layer_nodes, layer_initializers, source = conv_relu(
            rng, f"conv{index}", source, channels, out_channels, stride
        )
        nodes += layer_nodes
        initializers += layer_initializers
        channels = out_channels

    fc_weight = (rng.standard_normal((10, channels)) * np.sqrt(1.0 / channels)).astype(np.float32)
    initializers += [
        numpy_helper.from_array(fc_weight, "fc.weight"),
        numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", [source], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [BATCH, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [BATCH, 10])],
        initializers,
    )
    return helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="ward",
    )


def normalise(model):
    """Name the batch dimension N and fix the opset order (skl2onnx's follows set order)."""
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = BATCH
    opsets = sorted(model.opset_import, key=lambda opset: opset.domain)
    del model.opset_import[:]
    model.opset_import.extend(opsets)


def write_model(model, path):
    normalise(model)
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


def digit_picture(pixels):
    """An 8x8 digit (0..16, ink high) drawn as a grayscale picture, each cell a square block."""
    gray = np.rint(pixels.reshape(8, 8) * 255.0 / 16.0).astype(np.uint8)
    block = DIGIT_IMAGE_SIDE // 8
    return Image.fromarray(np.kron(gray, np.ones((block, block), dtype=np.uint8)), mode="L")


def write_digit_samples(directory):
    """The first held-out picture of each digit (PNG), and one JPEG; return the paths."""
    _, x_test, _, y_test = digits_split()
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for digit in range(10):
        index = int(np.flatnonzero(y_test == digit)[0])
        paths.append(directory / f"{digit}.png")
        digit_picture(x_test[index]).save(paths[-1], format="PNG", optimize=False)
    index = int(np.flatnonzero(y_test == 7)[1])
    paths.append(directory / "7.jpg")
    digit_picture(x_test[index]).convert("RGB").save(paths[-1], format="JPEG", quality=95)
    return paths


# One Identity per Open Inference Protocol datatype: the API tests send every
# datatype through a real worker and get it back unchanged.
IDENTITY_TYPES = {
    "bool": TensorProto.BOOL, "uint8": TensorProto.UINT8, "uint16": TensorProto.UINT16,
    "uint32": TensorProto.UINT32, "uint64": TensorProto.UINT64, "int8": TensorProto.INT8,
    "int16": TensorProto.INT16, "int32": TensorProto.INT32, "int64": TensorProto.INT64,
    "fp16": TensorProto.FLOAT16, "fp32": TensorProto.FLOAT, "fp64": TensorProto.DOUBLE,
    "bf16": TensorProto.BFLOAT16, "bytes": TensorProto.STRING,
}


def build_identity():
    nodes, inputs, outputs = [], [], []
    for name, elem in IDENTITY_TYPES.items():
        nodes.append(helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"], name=f"id_{name}"))
        inputs.append(helper.make_tensor_value_info(f"in_{name}", elem, [BATCH, 2]))
        outputs.append(helper.make_tensor_value_info(f"out_{name}", elem, [BATCH, 2]))
    graph = helper.make_graph(nodes, "identity", inputs, outputs)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION, producer_name="ward"
    )


def write_models(root):
    """Build every model and write it under root; return the paths written."""
    paths = []
    for version, hidden in DIGITS_HIDDEN.items():
        paths.append(model_path(root, "digits", version))
        model = export_digits(train_digits(hidden))
        write_model(model, paths[-1])
        if version == DIGIT_IMAGE_SOURCE:
            paths.append(model_path(root, "digit_image", "1.0.0"))
            write_model(model, paths[-1])
    paths += write_digit_samples(root / "digit_image" / "1.0.0" / "samples")
    paths.append(model_path(root, "cnn", "1.0.0"))
    write_model(build_cnn(), paths[-1])
    identity_root = IDENTITY_DIR if root == MODELS_DIR else root / "_fixtures"
    paths.append(model_path(identity_root, "identity", "1.0.0"))
    write_model(build_identity(), paths[-1])
    return paths


def stale_files(committed_root):
    """Regenerate into a temporary directory; describe each committed file that differs."""
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        for fresh in write_models(Path(tmp)):
            relative = fresh.relative_to(tmp)
            if relative.parts[0] == "_fixtures":
                committed = IDENTITY_DIR.joinpath(*relative.parts[1:])
            else:
                committed = committed_root / relative
            shown = committed.relative_to(MODELS_DIR.parent)
            if not committed.is_file():
                problems.append(f"{shown}: missing")
            elif committed.read_bytes() != fresh.read_bytes():
                problems.append(f"{shown}: differs from the regenerated model")
    return problems


def session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def check_interface(sess, path, interface):
    inputs, outputs = interface
    for expected, actual, kind in [
        (inputs, sess.get_inputs(), "inputs"),
        (outputs, sess.get_outputs(), "outputs"),
    ]:
        found = {arg.name: (arg.type, arg.shape) for arg in actual}
        require(found == expected, f"{path}: {kind} are {found}, expected {expected}")


def digits_accuracy(path):
    """Held-out accuracy with onnxruntime; also require argmax(probabilities) == label."""
    sess = session(path)
    check_interface(sess, path, DIGITS_INTERFACE)
    _, x_test, _, y_test = digits_split()
    label, probabilities = sess.run(
        ["label", "probabilities"], {"input": x_test.astype(np.float32)}
    )
    require(
        label.dtype == np.int64 and probabilities.dtype == np.float32,
        f"{path}: unexpected output dtypes",
    )
    require(
        probabilities.shape == (len(y_test), 10),
        f"{path}: probabilities shape {probabilities.shape}",
    )
    require(
        np.array_equal(probabilities.argmax(axis=1), label),
        f"{path}: argmax(probabilities) != label",
    )
    accuracy = float(np.mean(label == y_test))
    require(accuracy >= MIN_ACCURACY, f"{path}: accuracy {accuracy:.4f} < {MIN_ACCURACY}")
    return accuracy


def cnn_median_ms(path, runs=50):
    """Median single-image latency on one thread (for information), after checking the
    interface and outputs."""
    sess = session(path)
    check_interface(sess, path, CNN_INTERFACE)
    batch = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    (logits,) = sess.run(["logits"], {"input": batch})
    require(
        logits.shape == (2, 10) and logits.dtype == np.float32,
        f"{path}: logits {logits.dtype}{logits.shape}",
    )
    require(bool(np.isfinite(logits).all()), f"{path}: non-finite logits")

    image = {"input": batch[:1]}
    for _ in range(5):
        sess.run(None, image)
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, image)
        timings.append((time.perf_counter() - start) * 1000)
    # Informational only: speed is measured by benchmarks, not asserted in a check.
    return statistics.median(timings)


def verify(root):
    """Check the models under root with onnxruntime and print a one-line summary of each."""
    for version in DIGITS_HIDDEN:
        path = model_path(root, "digits", version)
        accuracy = digits_accuracy(path)
        print(f"digits {version}: held-out accuracy {accuracy:.4f}, {path.stat().st_size} bytes")
    path = model_path(root, "digit_image", "1.0.0")
    digits_accuracy(path)
    print(f"digit_image 1.0.0: the digits {DIGIT_IMAGE_SOURCE} network, {len(list(path.parent.parent.glob('samples/*')))} samples")
    path = model_path(root, "cnn", "1.0.0")
    median = cnn_median_ms(path)
    print(f"cnn 1.0.0: median {median:.2f} ms per image on 1 thread, {path.stat().st_size} bytes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="verify the committed models instead of writing them"
    )
    args = parser.parse_args()
    try:
        if args.check:
            problems = stale_files(MODELS_DIR)
            for problem in problems:
                print(problem)
            if problems:
                print("run `python models/generate.py` and commit the result")
                return 1
        else:
            write_models(MODELS_DIR)
        verify(MODELS_DIR)
    except CheckFailed as failure:
        print(f"check failed: {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
