"""Mean luminance of the picture: the whole "model" of this example plugin."""

import numpy as np


def load(context):
    # Runs once, before the warmup; its result is context.state.
    return {"threshold": float(context.config.get("threshold", 0.5))}


def infer(inputs, context):
    return {"luminance": np.array([inputs["luma"].mean()], dtype=np.float32)}
