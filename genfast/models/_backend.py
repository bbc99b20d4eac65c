from types import ModuleType

from .. import ops, reference

BACKENDS = {"fused": ops, "reference": reference}


def backend_ops(backend: str) -> ModuleType:
    """genfast.ops for 'fused', genfast.reference for 'reference'."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {tuple(BACKENDS)}, got {backend!r}")
    return BACKENDS[backend]
