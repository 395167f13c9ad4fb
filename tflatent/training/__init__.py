"""Training machinery: distribution strategies, optimizers, callbacks and run directories."""
