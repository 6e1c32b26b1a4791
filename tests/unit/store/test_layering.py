"""The storage layer knows nothing of the pipeline: the records both use live in the store."""

import ast
from pathlib import Path

import hypersdk.store

STORE = Path(hypersdk.store.__file__).parent


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of each import in a module of ``hypersdk.store``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative to hypersdk.store (level 1), hypersdk (level 2)
                base = ["hypersdk", "store"][:3 - node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((node.lineno, name))
    return found


def test_no_store_module_imports_the_pipeline():
    offending = [f"{path.name}:{line}: {name}" for path in sorted(STORE.glob("*.py"))
                 for line, name in imported_modules(path)
                 if name == "hypersdk.pipeline" or name.startswith("hypersdk.pipeline.")]
    assert offending == []


def test_the_pipeline_keeps_its_checkpoints_in_the_stores_record():
    from hypersdk.pipeline.transfer import copier, engine
    from hypersdk.store.checkpoints import ChunkRecord

    assert engine.ChunkRecord is ChunkRecord and copier.ChunkRecord is ChunkRecord
