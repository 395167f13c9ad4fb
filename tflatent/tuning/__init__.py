"""Hyper-parameter search: search spaces and the KerasTuner driver."""
