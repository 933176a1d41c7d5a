"""diffpir_core: the DiffPIR restoration library (PyTorch only, no orchestration).

Subpackages: ``models`` (guided-diffusion UNet, checkpoints), ``operators`` (degradations and their
closed-form data solutions), ``sampling`` (schedule and the DiffPIR sampler), ``metrics``, ``io``
(images and the Zarr v3 store), ``training`` (the project's own small prior).
"""

__version__ = "0.1.0"
