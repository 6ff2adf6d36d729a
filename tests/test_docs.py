"""Docs as tests: every ```python block and doctest in README.md and docs/ runs.

A block with ``>>>`` prompts is a doctest whose output must match; any other
```python block must run as a whole program, on its own (each block is a
fresh ``__main__`` namespace, so a block that leans on names from another
fails here).  A block that imports an optional library (Dask, pandas,
xarray, PyTorch, JAX) skips where it is absent, and fails in CI's extras run
(LEAKY_REQUIRE_OPTIONAL=1), like the other optional tests.
"""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
from optional import require

ROOT = Path(__file__).resolve().parent.parent
if not (ROOT / "docs").is_dir():
    # a wheel's tests run from the sdist's tests/ alone, without the documents
    pytest.skip("README.md and docs/ are not beside these tests", allow_module_level=True)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
# an import of these in a block makes the block optional, with the extra that installs it
OPTIONAL = {
    "dask": "dask",
    "distributed": "dask",
    "pandas": "ecosystem",
    "xarray": "ecosystem",
    "torch": "frameworks",
    "jax": "frameworks",
    "sklearn": "examples",
}
IMPORTED = re.compile(r"^\s*(?:>>> )?(?:import|from)\s+([a-zA-Z_]\w*)", re.MULTILINE)


def blocks() -> list[pytest.ParameterSet]:
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            name = f"{path.relative_to(ROOT)}:{line}"
            found.append(pytest.param(name, match.group(1), id=name))
    return found


def test_the_docs_have_python_blocks() -> None:
    # the README's examples and the guides' blocks, not an empty parametrization
    names = [param.values[0] for param in blocks()]
    assert any(str(name).startswith("README.md:") for name in names)
    assert len(names) >= 6, names


@pytest.mark.parametrize(("name", "code"), blocks())
def test_python_block_runs(name: str, code: str) -> None:
    for module in sorted(set(IMPORTED.findall(code))):
        if module in OPTIONAL:
            require(module, OPTIONAL[module])
    if ">>>" in code:
        test = doctest.DocTestParser().get_doctest(code, {}, name, name, 0)
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test)
        assert runner.failures == 0, f"{name}: {runner.failures} of {runner.tries} examples failed"
    else:
        compiled = compile(code, name, "exec")  # a SyntaxError names the block and line
        exec(compiled, {"__name__": "__main__"})
