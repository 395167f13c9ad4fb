"""Flow math as TFP bijectors: ``forward`` = noise → data (sampling), ``inverse`` = data → noise.

``TRANSFORMS`` maps the config's ``model.transform`` to the elementwise transform class; each class
has ``num_params`` (raw network outputs per dimension) and ``from_raw_params(raw [..., D, k])``.
"""

from tflatent.bijectors.affine import Affine
from tflatent.bijectors.nlsq import NLSq

TRANSFORMS = {"nlsq": NLSq, "affine": Affine}

__all__ = ["Affine", "NLSq", "TRANSFORMS"]
