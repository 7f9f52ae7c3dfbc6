"""Reference outputs for the worker tests: every sample of scikit-learn's
bundled digits data set through in-process onnxruntime, one sample per run.

Usage: digits_reference.py MODEL.onnx OUT.bin
OUT.bin: u32 N, then N*64 float32 inputs, N*10 float32 probabilities, N int64 labels.
"""

import struct
import sys

import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_digits


def main(model, out):
    x = load_digits().data.astype(np.float32)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    probs, labels = [], []
    for row in x:
        label, p = session.run(["label", "probabilities"], {"input": row[None, :]})
        labels.append(label[0])
        probs.append(p[0])
    with open(out, "wb") as f:
        f.write(struct.pack("<I", len(x)))
        f.write(x.astype("<f4").tobytes())
        f.write(np.asarray(probs, dtype="<f4").tobytes())
        f.write(np.asarray(labels, dtype="<i8").tobytes())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
