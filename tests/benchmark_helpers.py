"""Loading a script of benchmarks/ (not a package: its scripts run as files) as a module, for its tests."""

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(stem: str, module_name: str = None):
    """benchmarks/<stem>.py as a fresh module named ``module_name`` (default: ``stem``)."""
    spec = importlib.util.spec_from_file_location(module_name or stem, BENCHMARKS / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
