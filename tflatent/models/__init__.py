"""The sequence models: the contract they share (``base.SequenceModel``), the latent flow model (q(z|x),
the prior, p(x|z), p(T)), the LSTM baseline, the registry that builds either from a config, and the
importance-sampled likelihood they are evaluated with."""
