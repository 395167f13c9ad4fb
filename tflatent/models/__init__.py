"""The sequence models: the latent flow model (q(z|x), the prior, p(x|z), p(T)), the LSTM baseline,
and the importance-sampled likelihood they are evaluated with."""
