"""The package's layers show in its imports: data -> modeling -> training -> stages ->
labelling -> pipeline -> cli, each importing only layers before it; the edges (config, storage, tracking,
console, ...) import no layer at all; and no module imports another's private names."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "rlhf"
LAYERS = ["algorithms", "data", "modeling", "training", "stages", "labelling", "pipeline", "cli"]


def _layer(path: Path) -> str:
    part = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    return "cli" if part == "__main__" else part  # ``python -m rlhf``: the command


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every ``from rlhf... import ...`` and ``import rlhf...`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlhf"):
            found.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.startswith("rlhf")]
    return found


def _target_layer(module: str, names: list[str]) -> set[str]:
    parts = module.split(".")
    if len(parts) > 1:
        return {parts[1]}
    return set(names)  # from rlhf import storage, __version__


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_down_the_layers_only(path):
    own = _layer(path)
    allowed = set(LAYERS[: LAYERS.index(own) + 1]) if own in LAYERS else set()
    for module, names in _imports(path):
        for target in _target_layer(module, names) & set(LAYERS):
            assert target in allowed, f"{path.name} ({own}) imports {module} ({target})"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_private_names_imported_across_modules(path):
    for module, names in _imports(path):
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        assert not private, f"{path.name} imports private {private} from {module}"
