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
from .ivp import solve_ivp  # noqa: E402
from .model import Model, Solution  # noqa: E402
from .system import AdjointEquations, Loss, ODESystem, SensitivityEquations  # noqa: E402
from .tableaus import TABLEAUS, ButcherTableau  # noqa: E402

__all__ = [
    "ODESystem",
    "Model",
    "Solution",
    "solve_ivp",
    "ButcherTableau",
    "TABLEAUS",
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
