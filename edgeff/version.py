"""edgeff's version, in a module of its own: the package imports FFClassifier, which imports modules that
name the version."""

__version__ = "0.1.0"
