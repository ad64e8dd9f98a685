"""SAGAN ablation pipeline: MNIST -> SAGAN -> samples -> metrics -> ablation report."""
__version__ = "0.1.0"
