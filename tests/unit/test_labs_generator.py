"""solutions/ -> labs/: the TODO stubs `make_lab` writes, `build_labs` in a course folder of its own, the
real repository's labs being in sync (what CI's `build-labs --check` runs), and `todo_cell_index`."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labcloud.notebooks import build_labs, make_lab, read_notebook, solution_files, todo_cell_index
from labcloud.paths import course_root

REPO = course_root()
RUFF = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
LINE_LENGTH = 120  # pyproject.toml [tool.ruff]

SOLUTION = '''\
# %%
import math

x = 1


def area(r):
    """Area of a circle."""
    ### BEGIN SOLUTION
    ### HINT: use math.pi,
    ### HINT:    not 3.14.
    result = math.pi * r**2
    return result
    ### END SOLUTION


# %%
### BEGIN SOLUTION
y = area(x)
### END SOLUTION
print(y)
'''

LAB = '''\
# %%
import math

x = 1


def area(r):
    """Area of a circle."""
    # TODO: use math.pi, not 3.14.
    raise NotImplementedError("Exercise 1: replace this line with your code")


# %%
# TODO: write your solution here.
raise NotImplementedError("Exercise 2: replace this line with your code")
print(y)
'''


# ---------------------------------------------------------------------------------------------------------
# make_lab
# ---------------------------------------------------------------------------------------------------------


def test_make_lab_replaces_each_region_by_a_numbered_todo_stub():
    assert make_lab(SOLUTION) == LAB


def test_the_lab_is_valid_python_without_the_answer():
    lab = make_lab(SOLUTION)
    ast.parse(lab)
    assert "math.pi * r**2" not in lab and "y = area(x)" not in lab
    assert "SOLUTION" not in lab and "HINT" not in lab


def test_make_lab_keeps_the_indentation_of_the_markers():
    source = "class A:\n    def f(self):\n\t\t### BEGIN SOLUTION\n\t\treturn 1\n\t\t### END SOLUTION\n"
    assert make_lab(source) == (
        "class A:\n    def f(self):\n"
        "\t\t# TODO: write your solution here.\n"
        '\t\traise NotImplementedError("Exercise 1: replace this line with your code")\n'
    )


def test_make_lab_numbers_exercises_in_order():
    region = "### BEGIN SOLUTION\npass\n### END SOLUTION\n"
    lab = make_lab("# %%\n" + region + "# %%\n" + region + "x = 1\n" + region)
    assert [line for line in lab.splitlines() if "NotImplementedError" in line] == [
        f'raise NotImplementedError("Exercise {n}: replace this line with your code")' for n in (1, 2, 3)
    ]


def test_make_lab_joins_multiple_hint_lines():
    source = (
        "### BEGIN SOLUTION\n"
        "### HINT: first,\n"
        "answer = 42\n"
        "    ### HINT:   second   \n"
        "### HINT: third.\n"
        "### END SOLUTION\n"
    )
    assert make_lab(source).splitlines()[0] == "# TODO: first, second third."


@pytest.mark.parametrize(
    "source",
    [
        "",
        "x = 1",  # no final newline
        "a = 1\r\nb = 2\r\n",  # Windows line ends
        "\tweird   = 'spacing'   \n\n\n# ### not a marker\n# é ∑ ✓\n",
        "s = '''\n   ### HINT: only a hint outside a region is kept\n'''\n",
    ],
)
def test_code_outside_regions_is_kept_byte_for_byte(source):
    assert make_lab(source) == source


def test_code_around_a_region_is_kept_byte_for_byte():
    before = "# %% [markdown]\n# Title  \n\n# %%\nimport os\t# tab\r\n"
    after = "print('after')   \n\n\n# end"
    lab = make_lab(before + "### BEGIN SOLUTION\nsecret = 1\n### END SOLUTION\n" + after)
    assert lab.startswith(before)
    assert lab.endswith(after)
    assert "secret" not in lab


@pytest.mark.parametrize(
    "source, message",
    [
        ("### END SOLUTION\n", "without '### BEGIN SOLUTION'"),
        ("### BEGIN SOLUTION\nx = 1\n", "without '### END SOLUTION'"),
        ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION\n", "nested"),
        ("### BEGIN SOLUTION\n### END SOLUTION\n### END SOLUTION\n", "without '### BEGIN SOLUTION'"),
    ],
)
def test_unbalanced_or_nested_markers_raise(source, message):
    with pytest.raises(ValueError, match=message):
        make_lab(source)


# ---------------------------------------------------------------------------------------------------------
# build_labs in a course folder of its own
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def course(tmp_path, monkeypatch):
    for name in ("solutions", "labs", "quizzes"):
        (tmp_path / name).mkdir()
    (tmp_path / "solutions" / "01_intro.py").write_text(SOLUTION)
    (tmp_path / "solutions" / "02_next.py").write_text("# %%\n### BEGIN SOLUTION\nz = 3\n### END SOLUTION\n")
    (tmp_path / "solutions" / "helpers.py").write_text("not a notebook: no NN_ prefix\n")
    monkeypatch.setenv("LABCLOUD_COURSE_DIR", str(tmp_path))
    return tmp_path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_build_labs_writes_one_lab_per_solution(course):
    assert build_labs() == ["labs/01_intro.py", "labs/02_next.py"]
    assert (course / "labs" / "01_intro.py").read_text() == LAB
    assert (course / "labs" / "02_next.py").read_text() == make_lab((course / "solutions" / "02_next.py").read_text())
    assert sorted(p.name for p in (course / "labs").iterdir()) == ["01_intro.py", "02_next.py"]
    assert build_labs() == []  # a second run has nothing to write


def test_check_is_empty_when_labs_are_in_sync(course):
    build_labs()
    before = _snapshot(course)
    assert build_labs(check=True) == []
    assert _snapshot(course) == before


def test_check_reports_a_stale_lab_and_writes_nothing(course):
    build_labs()
    solution = course / "solutions" / "01_intro.py"
    solution.write_text(SOLUTION.replace("print(y)", "print(y * 2)"))
    before = _snapshot(course)
    assert build_labs(check=True) == ["labs/01_intro.py"]
    assert _snapshot(course) == before
    assert (course / "labs" / "01_intro.py").read_text() == LAB  # still the old one
    # Without check the lab is rewritten, and then all is in sync.
    assert build_labs() == ["labs/01_intro.py"]
    assert "print(y * 2)" in (course / "labs" / "01_intro.py").read_text()
    assert build_labs(check=True) == []


def test_check_reports_a_missing_lab(course):
    build_labs()
    (course / "labs" / "02_next.py").unlink()
    assert build_labs(check=True) == ["labs/02_next.py"]
    assert not (course / "labs" / "02_next.py").exists()


def test_check_reports_an_orphan_lab_and_build_removes_it(course):
    build_labs()
    orphan = course / "labs" / "03_gone.py"
    orphan.write_text("# %%\nprint('its solution was deleted')\n")
    (course / "labs" / "README.md").write_text("not a lab")
    before = _snapshot(course)
    assert build_labs(check=True) == ["labs/03_gone.py (no solution)"]
    assert _snapshot(course) == before
    assert build_labs() == ["labs/03_gone.py (no solution)"]
    assert not orphan.exists()
    assert (course / "labs" / "README.md").exists()  # only NN_*.py files are labs
    assert build_labs(check=True) == []


def test_check_on_a_course_without_labs_reports_all_and_creates_nothing(course):
    (course / "labs").rmdir()
    assert build_labs(check=True) == ["labs/01_intro.py", "labs/02_next.py"]
    assert not (course / "labs").exists()


def test_a_bad_solution_fails_the_build_loudly(course):
    (course / "solutions" / "03_broken.py").write_text("### BEGIN SOLUTION\nx = 1\n")
    with pytest.raises(ValueError):
        build_labs(check=True)


def test_cli_check_fails_on_a_stale_course_and_passes_once_built(course):
    command = [sys.executable, "-m", "labcloud.cli", "build-labs", "--check"]
    env = {**os.environ, "LABCLOUD_COURSE_DIR": str(course)}
    stale = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert stale.returncode == 1
    assert "labs/01_intro.py" in stale.stderr and "make labs" in stale.stderr
    assert not (course / "labs" / "01_intro.py").exists()
    build_labs()
    fresh = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert fresh.returncode == 0, fresh.stderr
    assert "up to date" in fresh.stdout


# ---------------------------------------------------------------------------------------------------------
# todo_cell_index
# ---------------------------------------------------------------------------------------------------------


def test_todo_cell_index_finds_the_first_exercise_cell_of_a_lab(course):
    (course / "solutions" / "04_cells.py").write_text(
        "# %% [markdown]\n"
        "# # A lab\n"
        "# raise NotImplementedError in markdown does not count\n"
        "\n"
        "# %%\n"
        "setup = 1\n"
        "\n"
        "# %%\n"
        "def f():\n"
        "    ### BEGIN SOLUTION\n"
        "    return setup\n"
        "    ### END SOLUTION\n"
        "\n"
        "# %%\n"
        "### BEGIN SOLUTION\n"
        "g = 2\n"
        "### END SOLUTION\n"
    )
    build_labs()
    lab = read_notebook(course / "labs" / "04_cells.py")
    assert [c.cell_type for c in lab.cells] == ["markdown", "code", "code", "code"]
    assert todo_cell_index(lab) == 2
    assert todo_cell_index(read_notebook(course / "solutions" / "04_cells.py")) is None
    assert todo_cell_index(read_notebook(course / "labs" / "02_next.py")) == 0


# ---------------------------------------------------------------------------------------------------------
# The real repository (CI runs `labcloud build-labs --check`)
# ---------------------------------------------------------------------------------------------------------


def test_the_repository_labs_are_in_sync_with_the_solutions(monkeypatch):
    monkeypatch.delenv("LABCLOUD_COURSE_DIR", raising=False)
    assert build_labs(check=True) == [], "run `make labs` (labcloud build-labs) and commit labs/"


def test_cli_build_labs_check_passes_on_the_repository():
    env = {k: v for k, v in os.environ.items() if k != "LABCLOUD_COURSE_DIR"}
    result = subprocess.run(
        [sys.executable, "-m", "labcloud.cli", "build-labs", "--check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "labs/ is up to date" in result.stdout


def test_todo_lines_fit_the_line_length(monkeypatch):
    monkeypatch.delenv("LABCLOUD_COURSE_DIR", raising=False)
    too_long = [
        (solution.name, line)
        for solution in solution_files()
        for line in make_lab(solution.read_text()).splitlines()
        if line.lstrip().startswith("# TODO:") and len(line) > LINE_LENGTH
    ]
    assert too_long == []


def _ruff_problems(root: Path, folder: str) -> set[tuple[str, str]]:
    result = subprocess.run(
        [RUFF, "check", "--output-format", "json", "--no-cache", folder],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {(p["code"], p["message"]) for p in json.loads(result.stdout)}


@pytest.mark.skipif(RUFF is None, reason="ruff is not installed")
def test_generated_labs_lint_as_cleanly_as_their_solutions(tmp_path, monkeypatch):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "quizzes").mkdir()
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    for solution in sorted((REPO / "solutions").glob("[0-9][0-9]_*.py")):
        shutil.copy(solution, tmp_path / "solutions" / solution.name)
    monkeypatch.setenv("LABCLOUD_COURSE_DIR", str(tmp_path))
    build_labs()
    # Line numbers differ between a lab and its solution, so problems are compared by code and message.
    assert _ruff_problems(tmp_path, "labs") - _ruff_problems(tmp_path, "solutions") == set()
