"""edgeff: Forward-Forward training on small Linux devices.

    from edgeff import FFClassifier     # a scikit-learn-compatible classifier (edgeff/estimator.py)
"""

from .version import __version__

__all__ = ["FFClassifier", "__version__"]


def __getattr__(name):
    """FFClassifier, imported on first use: `import edgeff` (and the command line) stays light."""
    if name == "FFClassifier":
        from .estimator import FFClassifier
        return FFClassifier
    raise AttributeError(f"module 'edgeff' has no attribute {name!r}")
