"""genfast's version, from its one source: pyproject.toml, as installed (the package metadata).
The compiled kernels get the same string from the build (``build_info()["version"]``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("genfast")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
