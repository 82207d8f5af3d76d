"""edgeff: Forward-Forward training on small Linux devices.

    from edgeff import FFClassifier     # a scikit-learn-compatible classifier (edgeff/estimator.py)
    from edgeff import FFEncoder        # unsupervised FF as a scikit-learn transformer (edgeff/encoder.py)
"""

from .version import __version__

__all__ = ["FFClassifier", "FFEncoder", "__version__"]


def __getattr__(name):
    """FFClassifier and FFEncoder, imported on first use: `import edgeff` (and the command line) stays light."""
    if name == "FFClassifier":
        from .estimator import FFClassifier
        return FFClassifier
    if name == "FFEncoder":
        from .encoder import FFEncoder
        return FFEncoder
    raise AttributeError(f"module 'edgeff' has no attribute {name!r}")
