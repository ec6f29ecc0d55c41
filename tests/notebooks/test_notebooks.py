"""The notebook pipeline, end to end, on every solution and lab of the course.

nbval runs the committed references in solutions/executed/ (pytest's testpaths) and compares the cells tagged
`nbval-check-output`. These tests add what nbval cannot see: the references are executions of the current
sources, each solution also runs with parameters other than its defaults (papermill, as `labcloud run -p`), and
each generated lab runs up to its first exercise and stops there with NotImplementedError.
"""

from __future__ import annotations

import pytest

from labcloud.notebooks import read_notebook, reference_drift, run_notebook, solution_files, todo_cell_index
from labcloud.paths import course_root

SOLUTIONS = solution_files()
LABS = [course_root() / "labs" / s.name for s in SOLUTIONS]


def _ids(paths):
    return [p.stem for p in paths]


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_the_reference_is_an_execution_of_the_current_source(solution):
    assert reference_drift(solution) == [], "run `make reference` and commit solutions/executed/"


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_every_notebook_opens_with_goals_parameters_and_one_connect(solution):
    cells = read_notebook(solution).cells
    assert cells[0].cell_type == "markdown" and "you will learn" in cells[0].source.lower(), "learning goals first"
    assert "**Time:**" in cells[0].source and "minutes" in cells[0].source, "and a time estimate"
    parameters = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and 'backend = "local"' in parameters[0].source and "seed" in parameters[0].source
    connects = [c for c in cells if c.cell_type == "code" and "labcloud.connect(backend" in c.source]
    assert len(connects) == 1


@pytest.mark.parametrize("solution", SOLUTIONS, ids=_ids(SOLUTIONS))
def test_the_solution_runs_to_the_end_with_other_parameters(solution, tmp_path):
    result = run_notebook(solution, parameters={"seed": 7}, output_dir=tmp_path)
    assert result.ok, f"{result.name} failed in cell {result.cell_index}: {result.error}"
    executed = read_notebook(result.output)
    assert "seed = 7" in executed.cells[_injected_index(executed)].source


@pytest.mark.parametrize("lab", LABS, ids=_ids(LABS))
def test_the_lab_runs_up_to_its_first_todo_and_stops_there(lab, tmp_path):
    first_todo = todo_cell_index(read_notebook(lab))
    assert first_todo is not None, f"{lab.name} has no exercise"
    result = run_notebook(lab, output_dir=tmp_path)
    assert result.status == "failed" and result.ename == "NotImplementedError", result.error
    assert result.cell_index == first_todo  # papermill counts the cells of the notebook it was given
    cells = read_notebook(result.output).cells
    executed = [c for c in cells if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    assert all(c.execution_count for c in executed[:first_todo] if c.cell_type == "code"), "all before it ran"


def _injected_index(notebook) -> int:
    tags = [c.metadata.get("tags", []) for c in notebook.cells]
    return next(i for i, t in enumerate(tags) if "injected-parameters" in t)
