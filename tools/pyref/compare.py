"""How close a recomputed PyTorch output must be to its committed golden value."""
import numpy as np


def same_output(committed, fresh):
    """Equal up to float rounding of another summation order: oneDNN picks other kernels on
    another CPU (AVX2 vs AVX-512), which moves a convolution's outputs by up to ~5e-7 of the
    tensor's largest magnitude (an AMD EPYC against the Intel machine that wrote the files), so
    near-zero elements are off by far more than 1e-5 of themselves. Allowed: 1e-5 of the element
    plus 2e-6 of the tensor's largest magnitude (at least 1)."""
    scale = max(1.0, float(np.abs(committed).max())) if committed.size else 1.0
    return bool(np.allclose(committed, fresh, rtol=1e-5, atol=2e-6 * scale))
