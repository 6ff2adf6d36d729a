"""The single source of leaky's version (read by setuptools and by leaky itself)."""

__version__ = "0.1.0"
