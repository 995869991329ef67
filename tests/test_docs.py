"""The documentation site builds with ``mkdocs build --strict`` (every page in the nav exists,
every link and cross-reference resolves, every docstring of the API reference parses, the
family table of docs/_hooks.py finds f, g and h in every registry member's docstring), and
the examples on its pages run as written."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

def _installed(module: str) -> bool:
    try:  # a dotted name imports its parent, which may be missing too
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_docs = pytest.mark.skipif(
    not all(_installed(m) for m in ("mkdocs", "material", "mkdocstrings_handlers.python", "griffe", "mathjax")),
    reason="the docs extra is not installed (pip install -e '.[docs]')",
)


@needs_docs
def test_mkdocs_build_strict(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    family = (tmp_path / "site" / "family" / "index.html").read_text()
    assert "divmin:family-table" not in family and "forward_kl" in family and "r log r" in family
    _assert_typeset_offline(tmp_path / "site")
    _assert_api_pages_lead_with_entry_points(tmp_path / "site")


def _assert_api_pages_lead_with_entry_points(site: Path):
    import re

    page = (site / "api" / "divergences" / "index.html").read_text()
    ids = re.findall(r'id="divmin\.divergences\.(\w+)"', page)
    assert ids[:3] == ["divergence", "available_divergences", "categorical_divergence"], ids[:6]
    assert ids.index("Discrepancy") > len(ids) // 2  # an internal base class, listed near the end
    # the module docstring's "(DESIGN.md)" is a link to the convention page
    assert re.search(r'href="\.\./\.\./design/#the-convention"[^>]*>DESIGN\.md', page)
    for name in ("align", "distill", "engine", "train", "recipes"):
        html = (site / "api" / name / "index.html").read_text()
        first = re.search(rf'id="divmin\.{name}\.(\w+)"', html).group(1)
        import importlib

        assert first == importlib.import_module(f"divmin.{name}").__all__[0], (name, first)


def _assert_typeset_offline(site: Path):
    """The math renderer is a file of the site, every page loads it, and no page loads a script, a
    stylesheet or a font from outside the site (the docs are read offline and behind firewalls)."""
    import re

    renderer = site / "assets" / "mathjax" / "tex-svg-full.js"
    assert renderer.is_file() and renderer.stat().st_size > 500_000  # MathJax itself, not a stub
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 20
    tag = re.compile(r"<(?:script|link|img|iframe)\b[^>]*?\b(?:src|href)=[\"']([^\"']+)", re.I)
    for page in pages:
        html = page.read_text()
        outside = [u for u in tag.findall(html) if re.match(r"(?:https?:)?//", u)]
        assert not outside, (page.relative_to(site), outside)
        if page.name == "index.html" and page.parent != site / "search":
            assert "assets/mathjax/tex-svg-full.js" in html, page.relative_to(site)
    design = (site / "design" / "index.html").read_text()
    assert design.count('class="arithmatex"') >= 5  # the formulas are marked for the renderer
    assert "\\mathbb{E}_Q" in design


@needs_docs
def test_family_hook_reads_every_member():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import _hooks
    finally:
        sys.path.remove(str(ROOT / "docs"))
    from divmin.divergences import available_divergences

    table = _hooks.family_table().splitlines()
    assert len(table) == 2 + len(available_divergences("f"))
    assert "| `reverse_kl` | - | `-log r` | `1 - log r` | `1` | yes | mode-seeking |" in "\n".join(table)
    assert all("| ? |" not in row for row in table)


@needs_docs
def test_griffe_extension_fences_doctests_and_drops_roles():
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        import _griffe_doctest as ext
    finally:
        sys.path.remove(str(ROOT / "docs"))
    text = "Uses :func:`divmin.sinkhorn` and :class:`~divmin.engine.Trainer`.\n\n    >>> 1 + 1\n    2\n\nAfter."
    out = ext.fence_doctests(ext._ROLE.sub(ext._role, text))
    assert out.splitlines() == ["Uses `divmin.sinkhorn` and `Trainer`.", "", "    ```pycon", "    >>> 1 + 1", "    2",
                                "    ```", "", "After."]


# docs/training.md continues shell commands (`divmin train ... --out runs/...`), so its snippets are fenced
# ```py, not run here; tests/train runs the same train / export / reload path end to end.
def _pages_with_examples() -> list[Path]:
    return sorted(p for p in (ROOT / "docs").rglob("*.md") if "```python" in p.read_text())


@pytest.mark.slow
@pytest.mark.parametrize("page", _pages_with_examples(), ids=lambda p: str(p.relative_to(ROOT / "docs")))
def test_page_examples_run(page, tmp_path):
    """Every ```python block of a page, run in order in a fresh process (offline, CPU, tiny sizes)."""
    import re

    code = "\n\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S))
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_index_install_line_is_the_readme_one():
    import re

    readme = (ROOT / "README.md").read_text()
    setup = re.search(r"## Setup[^\n]*\n+```bash\n(.*?)```", readme, flags=re.S).group(1)
    index = (ROOT / "docs" / "index.md").read_text()
    assert setup in index  # the same commands, not a second way to install


def test_performance_page_gives_machine_load_and_command_per_table():
    import re

    page = (ROOT / "docs" / "performance.md").read_text()
    assert "performance.md" in (ROOT / "mkdocs.yml").read_text()  # in the nav
    sections = re.split(r"\n## ", page)[1:]
    titles = [s.splitlines()[0] for s in sections]
    for topic in ("KD", "TRL", "POT", "teacher cache"):
        assert any(topic in t for t in titles), (topic, titles)
    for section in sections:
        for field in ("| machine |", "| load |", "| command |"):
            assert field in section, (section.splitlines()[0], field)
    assert any("GKDTrainer" in t for t in titles), titles  # the KD trainer against TRL (issue 28)
