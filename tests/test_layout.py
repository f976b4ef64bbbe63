"""A target is one package: what the README says a new target touches stays true."""
import ast
from pathlib import Path

import pytest

from conftest import ROOT
from pipeline import recipes

PIPELINE = ROOT / "pipeline"
TARGETS = recipes.targets()["targets"]


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    found |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_a_target_is_its_package_its_block_and_its_environment(target):
    package = PIPELINE / "targets" / target
    assert (package / "build.py").is_file() and (package / "runtime.py").is_file() and (package / "bench.py").is_file()
    toolchain = TARGETS[target]["toolchain"]
    assert (ROOT / "envs" / f"{toolchain}.in").is_file() and (ROOT / "envs" / f"{toolchain}.lock").is_file()
    outside = [path.relative_to(ROOT).as_posix() for path in PIPELINE.rglob("*.py")
               if package not in path.parents
               and any(m == f"pipeline.targets.{target}" or m.startswith(f"pipeline.targets.{target}.")
                       for m in imported_modules(path))]
    assert not outside, f"{outside} import the {target} package: only its own modules may"
    rules = [path.name for path in (ROOT / "rules").glob("*.smk") if target in path.read_text()]
    assert not rules, f"{rules} name the {target} target: the rules are generic over targets"


def test_the_runtime_interface_imports_no_stage():
    imports = {m for m in imported_modules(PIPELINE / "runtimes" / "base.py") if m.startswith("pipeline")}
    assert imports == {"pipeline.validation"}  # the contract's numbers, numpy only
    for target in TARGETS:
        runtime = imported_modules(PIPELINE / "targets" / target / "runtime.py")
        assert "pipeline.validate" not in runtime and "pipeline.runtimes.base" in runtime, target
