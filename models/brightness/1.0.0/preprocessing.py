"""Turns the decoded frame (uint8, height x width x 3, RGB) into luminance in 0..1."""

import numpy as np

# ITU-R BT.601 luma weights.
WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def preprocess(inputs, context):
    rgb = inputs["frame"].astype(np.float32) / 255.0
    return {"luma": rgb @ WEIGHTS}
