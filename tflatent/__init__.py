"""tflatent: Latent Normalizing Flows for Discrete Sequences (Ziegler & Rush, ICML 2019) in TensorFlow."""

__version__ = "0.1.0"
