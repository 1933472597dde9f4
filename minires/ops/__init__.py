"""The ops: one Function subclass each, forward and backward side by side (lessons 1-7)."""


def check_floating(op, **tensors):
    """Refuse integer data where an op multiplies and sums: sums of uint8 pixels would wrap
    around modulo 256, silently, so the caller converts them first."""
    for name, x in tensors.items():
        if x is not None and x.dtype.kind != "f":
            raise TypeError(f"{op}: {name} has dtype {x.dtype}; convert it to floating point "
                            f"first, e.g. x.astype(numpy.float32) (images: / 255)")
