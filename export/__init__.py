"""ONNX export of trained genfast models, and their serving with onnxruntime.

- :mod:`genfast.export.onnx_export` (needs torch, onnx, onnxscript, onnxruntime): ``to_onnx`` and
  ``export_run`` write one verified graph per job of a model (the graphs its
  ``genfast.models`` spec declares).
- :mod:`genfast.export.runtime` (needs only numpy and onnxruntime): ``load`` a graph or a folder of
  graphs and ``generate``, ``reconstruct``, ``encode``, ``decode``, ``denoise``, ``energy``.
- :mod:`genfast.export.serve`: the HTTP endpoint on top of the runtime.

Nothing here imports genfast's compiled kernels: the graphs hold standard ONNX operators only.
The names below load on first use, so that importing the runtime pulls in neither torch nor onnx.
"""

from importlib import import_module

_NAMES = {"to_onnx": "onnx_export", "export_run": "onnx_export", "ExportError": "onnx_export",
          "load": "runtime", "GenfastModel": "runtime"}

__all__ = ["ExportError", "GenfastModel", "export_run", "load", "to_onnx"]


def __getattr__(name: str):
    if name not in _NAMES:
        raise AttributeError(f"module 'genfast.export' has no attribute {name!r}")
    return getattr(import_module(f".{_NAMES[name]}", __name__), name)
