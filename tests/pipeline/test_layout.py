"""The layout holds: every import allowed by docs/layout.md, no import cycle, no oversized module in pipeline/."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

PROJECT_PACKAGES = ("pipeline", "components", "serving", "data", "tools", "tests", "benchmarks")
MAX_PIPELINE_MODULE_LINES = 500


def _modules() -> dict[str, Path]:
    """module name -> file, for every .py file of the project."""
    found = {}
    for top in PROJECT_PACKAGES:
        for path in sorted((REPO_ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module that `name` is, or is defined in (None: not the project's)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """The project modules a file imports, anywhere in it (functions included). `from package import name` depends
    on the submodule when `name` is one, else on the package."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {_resolve(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {_resolve(f"{node.module}.{alias.name}") for alias in node.names}
    return found - {None}


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def _layout_rules() -> list[tuple[str, tuple[str, ...]]]:
    """(folder as a module prefix, the packages it may import) from the table in docs/layout.md, longest first."""
    rules = []
    for line in (REPO_ROOT / "docs" / "layout.md").read_text().splitlines():
        match = re.match(r"\| `([\w/]+)/` \|.*\| ([^|]*)\|$", line)
        if match:
            allowed = tuple(re.findall(r"`([\w.]+)`", match.group(2)))
            rules.append((match.group(1).replace("/", "."), allowed))
    return sorted(rules, key=lambda rule: -len(rule[0]))


RULES = _layout_rules()


def _folder_of(module: str) -> tuple[str, tuple[str, ...]] | None:
    return next(((folder, allowed) for folder, allowed in RULES
                 if module == folder or module.startswith(folder + ".")), None)


def test_the_layout_page_has_a_rule_for_every_folder():
    assert len(RULES) >= 12, RULES
    unruled = sorted(m for m in MODULES if _folder_of(m) is None)
    assert not unruled, f"modules in folders that docs/layout.md does not describe: {unruled}"


def test_every_import_is_allowed_by_the_layout_page():
    def allowed(target: str, prefixes: tuple[str, ...]) -> bool:
        # The package `pipeline` itself (its __init__: the Keras choice) is allowed everywhere.
        return target == "pipeline" or any(target == p or target.startswith(p + ".") for p in prefixes)
    violations = []
    for module, targets in sorted(GRAPH.items()):
        folder, prefixes = _folder_of(module)
        for target in sorted(targets):
            same_folder = _folder_of(target)[0] == folder
            if not same_folder and not allowed(target, prefixes):
                violations.append(f"{module} imports {target} ({folder}/ may import {', '.join(prefixes) or 'none'})")
    assert not violations, "\n".join(violations)


def test_no_import_cycles():
    """Tarjan's strongly connected components over module-level imports (function-level ones included)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for target in GRAPH.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(GRAPH):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_can_fail(monkeypatch):
    monkeypatch.setitem(GRAPH, "pipeline.config", GRAPH["pipeline.config"] | {"pipeline.pipeline"})
    monkeypatch.setitem(GRAPH, "pipeline.pipeline", GRAPH["pipeline.pipeline"] | {"pipeline.config"})
    with pytest.raises(AssertionError, match="import cycles"):
        test_no_import_cycles()


def test_test_modules_import_no_other_test_module():
    offenders = [f"{module} imports {target}" for module, targets in GRAPH.items() if module.startswith("tests.")
                 for target in targets
                 if target.startswith("tests.") and not target.startswith("tests.support") and target != "tests"]
    assert not offenders, offenders


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("pipeline")))
def test_no_module_of_pipeline_is_over_500_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_PIPELINE_MODULE_LINES, f"{MODULES[module]} has {lines} lines"
