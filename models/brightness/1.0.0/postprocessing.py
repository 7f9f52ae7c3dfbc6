"""Turns mean luminance into the declared schema: event_type, confidence, luminance."""


def postprocess(outputs, context):
    luminance = float(outputs["luminance"][0])
    threshold = context.state["threshold"]
    bright = luminance >= threshold
    # Distance from the threshold, scaled to 0..1 on each side.
    span = (1.0 - threshold) if bright else threshold
    confidence = min(1.0, abs(luminance - threshold) / span) if span > 0 else 1.0
    return {
        "event_type": "bright" if bright else "dark",
        "confidence": confidence,
        "luminance": luminance,
    }
