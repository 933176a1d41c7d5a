"""Regenerate ``data/bicubic_kernels.npz``: ``python -m diffpir_core.operators.make_sr_kernels``."""

from .sr_kernels import write_kernel_file

if __name__ == "__main__":
    print(f"wrote {write_kernel_file()}")
