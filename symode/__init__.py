"""symode: ODE dynamics written in SymPy, compiled to fast solvers with exact gradients."""

__version__ = "0.1.0"

from .errors import (  # noqa: E402
    DuplicateSymbolError,
    IntegrationError,
    InvalidStateError,
    NonFiniteInputError,
    ShapeError,
    Status,
    SymodeError,
    SystemDefinitionError,
    UndeclaredSymbolError,
    UnsupportedFunctionError,
)
from .system import AdjointEquations, Loss, ODESystem, SensitivityEquations  # noqa: E402

__all__ = [
    "ODESystem",
    "Loss",
    "AdjointEquations",
    "SensitivityEquations",
    "SymodeError",
    "SystemDefinitionError",
    "UndeclaredSymbolError",
    "InvalidStateError",
    "DuplicateSymbolError",
    "ShapeError",
    "NonFiniteInputError",
    "UnsupportedFunctionError",
    "IntegrationError",
    "Status",
]
