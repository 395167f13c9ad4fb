"""Serving: SavedModel export with TF Serving signatures, and a local server of TF Serving's REST API."""
