"""edgeff: Forward-Forward training on small Linux devices."""

__version__ = "0.1.0"
