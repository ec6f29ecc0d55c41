"""The notebook pipeline: solutions -> labs, papermill runs, the course run, and the nbval references.

`solutions/NN_topic.py` (jupytext percent format) is the only source. In it, an exercise's answer sits
between `### BEGIN SOLUTION` and `### END SOLUTION`; an optional `### HINT: ...` line inside becomes the
learner's TODO. `labs/` is generated from it, and `solutions/executed/` holds one executed copy per solution
with its outputs, which nbval re-runs and compares.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

from .paths import course_root

BEGIN, END, HINT = "### BEGIN SOLUTION", "### END SOLUTION", "### HINT:"
KERNEL = "python3"
# A lab's slowest cell takes seconds; a cell that has not finished in this time has hung, and the run says so.
CELL_TIMEOUT_S = 180


# --- solutions -> labs -------------------------------------------------------------------------------------


def solution_files(only: list[str] | None = None) -> list[Path]:
    files = sorted((course_root() / "solutions").glob("[0-9][0-9]_*.py"))
    return [f for f in files if not only or f.name[:2] in only]


def _todo_lines(indent: str, hint: str, width: int = 100) -> list[str]:
    """The hint as `# TODO:` comment lines short enough for the linter's line length."""
    lines = textwrap.wrap(hint, width=width - len(indent), initial_indent="# TODO: ", subsequent_indent="#       ")
    return [f"{indent}{line}\n" for line in lines]


def make_lab(source: str) -> str:
    """Replace each solution region by a TODO stub that raises NotImplementedError, keeping its indentation."""
    out: list[str] = []
    region: list[str] | None = None
    indent, exercise = "", 0
    for line in source.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith(BEGIN):
            if region is not None:
                raise ValueError(f"nested {BEGIN!r}")
            region, indent = [], line[: len(line) - len(line.lstrip())]
            exercise += 1
        elif stripped.startswith(END):
            if region is None:
                raise ValueError(f"{END!r} without {BEGIN!r}")
            hints = [r.strip()[len(HINT) :].strip() for r in region if r.strip().startswith(HINT)]
            out.extend(_todo_lines(indent, " ".join(hints) or "write your solution here."))
            out.append(f'{indent}raise NotImplementedError("Exercise {exercise}: replace this line with your code")\n')
            region = None
        elif region is not None:
            region.append(line)
        else:
            out.append(line)
    if region is not None:
        raise ValueError(f"{BEGIN!r} without {END!r}")
    return "".join(out)


def build_labs(check: bool = False) -> list[str]:
    """Write labs/ from solutions/. With `check`, write nothing and return the labs that are out of date."""
    labs_dir = course_root() / "labs"
    changed = []
    expected = set()
    for solution in solution_files():
        lab = labs_dir / solution.name
        expected.add(lab.name)
        text = make_lab(solution.read_text())
        if not lab.exists() or lab.read_text() != text:
            changed.append(str(lab.relative_to(course_root())))
            if not check:
                labs_dir.mkdir(exist_ok=True)
                lab.write_text(text)
    orphans = [p for p in labs_dir.glob("[0-9][0-9]_*.py") if p.name not in expected]
    changed += [f"{p.relative_to(course_root())} (no solution)" for p in orphans]
    if not check:
        for orphan in orphans:
            orphan.unlink()
    return changed


# --- running notebooks ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    name: str
    status: str  # passed | failed
    seconds: float
    output: Path
    error: str = ""
    ename: str = ""
    cell_index: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == "passed"


def read_notebook(path: Path):
    import jupytext
    import nbformat

    if path.suffix == ".ipynb":
        return nbformat.read(path, as_version=4)
    nb = jupytext.read(path)
    nb.metadata.pop("jupytext", None)
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "Python 3", "language": "python"}
    return nb


def _parameter_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def run_notebook(
    path: Path,
    parameters: dict | None = None,
    output_dir: Path | None = None,
    cwd: Path | None = None,
    timeout_s: float = CELL_TIMEOUT_S,
) -> RunResult:
    """Execute a notebook (.py or .ipynb) with papermill; the executed copy goes to `output_dir`."""
    import nbformat
    import papermill
    from nbclient.exceptions import CellTimeoutError, DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    from .kernels import ReliableKernelManager

    path = Path(path).resolve()
    output_dir = Path(output_dir or course_root() / "build" / "notebooks")
    output_dir.mkdir(parents=True, exist_ok=True)
    source = output_dir / f"{path.stem}.source.ipynb"
    nbformat.write(read_notebook(path), source)
    output = output_dir / f"{path.stem}.ipynb"
    values = {k: _parameter_value(v) if isinstance(v, str) else v for k, v in (parameters or {}).items()}
    started = time.perf_counter()
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=values,
            kernel_name=KERNEL,
            cwd=str(cwd or path.parent),
            progress_bar=False,
            execution_timeout=timeout_s,
            kernel_manager_class=ReliableKernelManager,
        )
    except PapermillExecutionError as exc:
        seconds = time.perf_counter() - started
        return RunResult(path.stem, "failed", seconds, output, f"{exc.ename}: {exc.evalue}", exc.ename, exc.cell_index)
    except CellTimeoutError:
        index = _running_cell(output)
        message = f"cell {index} did not finish within {timeout_s:.0f} s: it hung or waits for what never came"
        return RunResult(path.stem, "failed", time.perf_counter() - started, output, message, "CellTimeoutError", index)
    except DeadKernelError:
        index = _running_cell(output)
        message = f"the kernel died while cell {index} ran (out of memory, or the process was killed)"
        return RunResult(path.stem, "failed", time.perf_counter() - started, output, message, "DeadKernelError", index)
    finally:
        source.unlink(missing_ok=True)
    return RunResult(path.stem, "passed", time.perf_counter() - started, output)


def _running_cell(output: Path) -> int | None:
    """The index of the last cell papermill started, in the notebook it saved."""
    import nbformat

    try:
        cells = nbformat.read(output, as_version=4).cells
    except (OSError, ValueError):
        return None
    started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def run_course(only: list[str] | None = None, output_dir: Path | None = None) -> list[RunResult]:
    """Run every solution notebook; print a table of notebook, result and seconds."""
    results = []
    print(f"{'notebook':<28} {'result':<8} {'seconds':>8}")
    for solution in solution_files(only):
        result = run_notebook(solution, output_dir=output_dir)
        results.append(result)
        print(f"{result.name:<28} {result.status:<8} {result.seconds:>8.1f}", flush=True)
        if result.error:
            print(f"    {result.error}", file=sys.stderr)
    total = sum(r.seconds for r in results)
    print(f"{'total':<28} {sum(r.ok for r in results)}/{len(results):<6} {total:>8.1f}")
    return results


# --- reference-executed copies (what nbval compares against) -------------------------------------------------


def reference_path(solution: Path) -> Path:
    return solution.parent / "executed" / f"{solution.stem}.ipynb"


def write_references(only: list[str] | None = None) -> list[Path]:
    """Execute each solution with its default parameters and store it, outputs included, for nbval."""
    import nbformat
    from nbclient import NotebookClient

    from .kernels import ReliableKernelManager
    from .localcloud.control import scratch_cloud

    written = []
    for solution in solution_files(only):
        target = reference_path(solution)
        target.parent.mkdir(exist_ok=True)
        nb = read_notebook(solution)
        # A fresh cloud per notebook, as in a test run; nbval runs the kernel in the reference's folder, so the
        # reference is made there too.
        with scratch_cloud():
            NotebookClient(
                nb,
                timeout=CELL_TIMEOUT_S,
                kernel_name=KERNEL,
                kernel_manager_class=ReliableKernelManager,
                resources={"metadata": {"path": str(target.parent)}},
            ).execute()
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        nbformat.write(nb, target)
        written.append(target)
    return written


def reference_drift(solution: Path) -> list[str]:
    """The cells whose type or source differ between a solution and its executed reference."""
    reference = reference_path(solution)
    if not reference.exists():
        return [f"{reference.name} is missing (run `make reference`)"]
    ours = [(c.cell_type, c.source) for c in read_notebook(solution).cells]
    theirs = [(c.cell_type, c.source) for c in read_notebook(reference).cells]
    if len(ours) != len(theirs):
        return [f"{len(ours)} cells in the solution, {len(theirs)} in the reference"]
    return [f"cell {i}: {a[1][:60]!r}" for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b]


def todo_cell_index(notebook) -> int | None:
    """Index of the first cell that raises NotImplementedError (a lab's first exercise)."""
    pattern = re.compile(r"^\s*raise NotImplementedError", re.MULTILINE)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code" and pattern.search(cell.source):
            return index
    return None


# --- JupyterLab ----------------------------------------------------------------------------------------------


def install_jupyter_settings() -> Path:
    """Make JupyterLab open .py notebooks (jupytext percent) as notebooks on a double click."""
    target = Path(sys.prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    settings = json.loads(target.read_text()) if target.exists() else {}
    docmanager = settings.setdefault("@jupyterlab/docmanager-extension:plugin", {})
    docmanager.setdefault("defaultViewers", {})["python"] = "Jupytext Notebook"
    target.write_text(json.dumps(settings, indent=2))
    return target
