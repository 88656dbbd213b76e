"""The on-disk cache of generated modules.

Each compiled system lives in its own directory ``<root>/numba/sys_<key>/``: the
generated ``_dynamics.py`` (its kernels, compiled by numba on first use into that
directory's ``__pycache__``) and ``meta.json`` with versions, the canonical inputs and a
SHA-256 of every file. The generic engine is not here: it is ``symode.kernels``,
compiled once per machine into numba's own cache (the package's ``__pycache__``, or
numba's user-wide cache directory, or ``NUMBA_CACHE_DIR``).

A specialized system (``compile(specialize=True)``) lives in ``spec_<key>/``: the same
``_dynamics.py``, a copy of the engine modules from ``kernels/`` (where
``kernels/dynamics.py`` finds the system's kernels as module globals, so numba inlines
them and caches the whole engine in that directory) and ``_entries_*.py``, the engine's
entry points per engine module and Runge–Kutta method
(``codegen.generate_entries_sources``).

- key = SHA-256 of the canonical expressions, backend, numba and SymPy versions and the
  generator's sources (``symode/system.py`` derives, ``symode/codegen.py`` prints; the
  engine sources too for a specialized directory): a change that alters the generated
  text gives a new directory, never a stale one, and an unrelated edit (a docstring in
  ``testing.py``) recompiles nothing;
- directories are built under a temporary name and renamed into place (atomic): a
  reader never sees a half-written module, and two processes compiling the same
  system both succeed (the loser of the rename uses the winner's directory);
- a directory whose files do not match ``meta.json`` (corrupted, edited, foreign) is
  moved aside and regenerated;
- a read-only cache root falls back to a per-user temporary directory, with a warning.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

import numba
import sympy

from . import __version__

__all__ = ["default_cache_dir", "kernels_dir", "load_generated"]

_lock = threading.Lock()


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/symode`` (``~/.cache/symode`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "symode"


def kernels_dir() -> Path:
    """The engine sources: ``symode.kernels`` when installed, ``kernels/`` in a checkout."""
    spec = importlib.util.find_spec("symode.kernels")
    if spec is not None and spec.origin:
        return Path(spec.origin).parent
    return Path(__file__).resolve().parent.parent / "kernels"


# the sources that decide a generated module's text: the derivations and the printer
_GENERATOR_SOURCES = ("system.py", "codegen.py")


@functools.cache
def _generator_digest() -> str:
    """A hash of the code generator's sources: a changed generator means a new key."""
    h = hashlib.sha256()
    here = Path(__file__).resolve().parent
    for name in _GENERATOR_SOURCES:
        h.update(name.encode())
        h.update((here / name).read_bytes())
    return h.hexdigest()


@functools.cache
def _kernel_sources() -> dict[str, str]:
    """The engine modules that a specialized directory copies, with its entry points."""
    d = kernels_dir()
    files = {p.name: p.read_text() for p in sorted(d.glob("*.py")) if p.name != "__init__.py"}
    if not files:
        raise FileNotFoundError(f"symode's engine sources were not found in {d}")
    from .codegen import generate_entries_sources
    from .tableaus import METHOD_IDS

    files.update(generate_entries_sources(len(METHOD_IDS)))
    return files


@functools.cache
def engine_digest() -> str:
    """A hash of the engine's sources (every ``kernels/*.py``) and numba's version."""
    h = hashlib.sha256(numba.__version__.encode())
    for path in sorted(kernels_dir().glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


ENGINE_STAMP = "symode-engine.sha256"


def ensure_engine_cache(where: Path) -> bool:
    """Keep numba's cache of the generic engine (directory ``where``) true to the
    engine's sources: numba invalidates a cached function when its own file changes,
    not when a file it calls into does (an edited ``kernels/dynamics.py`` would leave
    ``integrate.py``'s cached entry points calling kernels the old way). A stamp file
    holds ``engine_digest()``; on a mismatch the engine's cache files are removed
    before anything loads them. Returns whether it removed any."""
    stamp = where / ENGINE_STAMP
    digest = engine_digest()
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass
    stems = {p.stem for p in kernels_dir().glob("*.py")}
    removed = False
    for path in where.glob("*.nb[ic]") if where.exists() else []:
        if path.name.split(".")[0] in stems:
            path.unlink(missing_ok=True)
            removed = True
    try:
        where.mkdir(parents=True, exist_ok=True)
        tmp = where / f".{ENGINE_STAMP}-{uuid.uuid4().hex}"
        tmp.write_text(digest)
        os.replace(tmp, stamp)
    except OSError:  # a read-only cache: numba falls back the same way
        pass
    return removed


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def is_writable(directory: Path) -> bool:
    """Whether ``directory`` exists (or can be made) and takes a new file."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".probe-{uuid.uuid4().hex}"
        probe.write_text("")
        probe.unlink()
        return True
    except OSError:
        return False


def _writable_root(root: Path) -> Path:
    if is_writable(root):
        return root
    fallback = Path(tempfile.gettempdir()) / f"symode-cache-{os.getuid()}"
    warnings.warn(
        f"symode cache directory {root} is not writable; using {fallback}",
        RuntimeWarning,
        stacklevel=4,
    )
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


def _files(source: str, engine: dict[str, str]) -> dict[str, str]:
    init = '"""A symode-generated system (see meta.json)."""\n'
    return {"__init__.py": init, "_dynamics.py": source, **engine}


def _valid(directory: Path, expected: dict[str, str]) -> bool:
    try:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("files") != {name: _sha(text) for name, text in expected.items()}:
            return False
        return all(_sha((directory / name).read_text()) == h for name, h in meta["files"].items())
    except (OSError, ValueError, UnicodeDecodeError, AttributeError):
        return False


def _build(root: Path, key: str, files: dict[str, str], meta: dict) -> Path:
    final = root / key
    tmp = root / f".tmp-{key}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        os.rename(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not final.exists():
            raise
    return final


def _discard(directory: Path) -> None:
    trash = directory.with_name(f".trash-{directory.name}-{uuid.uuid4().hex}")
    try:
        os.rename(directory, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def load_generated(
    generate, canonical: str, backend: str = "numba", cache_dir=None, specialize: bool = False
):
    """Find (or generate and write) the module directory of a system and import it.

    ``generate()`` returns the ``_dynamics`` source; it is called only when the cache
    has no valid directory for ``canonical``, so a warm load skips all SymPy work.
    Returns ``(package_module, directory, source)``; the kernels are importable as
    ``package._dynamics``, and with ``specialize`` the engine modules as
    ``package.integrate`` etc.
    """
    engine = _kernel_sources() if specialize else {}
    key_text = "\n".join(
        [numba.__version__, sympy.__version__, backend, canonical]
        + [_generator_digest()]
        + [f"{k}:{_sha(v)}" for k, v in sorted(engine.items())]
    )
    key = ("spec_" if specialize else "sys_") + _sha(key_text)[:24]
    root = _writable_root(Path(cache_dir) if cache_dir is not None else default_cache_dir())
    root = root / backend
    root.mkdir(exist_ok=True)
    with _lock:
        directory = root / key
        source = None
        if directory.exists():
            try:
                source = (directory / "_dynamics.py").read_text()
            except (OSError, UnicodeDecodeError):
                source = ""
            if not _valid(directory, _files(source, engine)):
                _discard(directory)
                source = None
        if source is None or not directory.exists():
            source = generate()
            files = _files(source, engine)
            meta = {
                "symode": __version__,
                "numba": numba.__version__,
                "sympy": sympy.__version__,
                "backend": backend,
                "canonical": canonical,
                "files": {name: _sha(text) for name, text in files.items()},
            }
            directory = _build(root, key, files, meta)
        # one module per directory: the same system in two cache dirs are two modules
        modname = f"_symode_{key}_{_sha(str(directory.resolve()))[:8]}"
        pkg = sys.modules.get(modname)
        if pkg is None:
            spec = importlib.util.spec_from_file_location(
                modname, directory / "__init__.py", submodule_search_locations=[str(directory)]
            )
            pkg = importlib.util.module_from_spec(spec)
            sys.modules[modname] = pkg
            spec.loader.exec_module(pkg)
    return pkg, directory, source
