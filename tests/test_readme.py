"""The README runs as written: every ```python block, in order, in one namespace (as a
reader pasting them into one session would)."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_blocks_run_in_order(monkeypatch, cache_dir, capsys):
    blocks = python_blocks()
    assert len(blocks) >= 2
    # the README compiles into the default cache: point it into the test cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_dir / "readme-xdg"))
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    assert "Matrix" in capsys.readouterr().out
    sol, g = namespace["sol"], namespace["g"]
    assert sol.y.shape == (101, 2) and np.isfinite(sol.y).all()
    assert g.params.shape == (4,) and np.isfinite(g.params).all()
    value, grad = namespace["value"], namespace["grad"]
    assert np.isfinite(value) and grad.shape == (4,) and np.isfinite(grad).all()
    losses = namespace["losses"]  # the neural ODE's fit
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0], losses
