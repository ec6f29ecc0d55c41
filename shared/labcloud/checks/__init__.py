"""Exercise checks: each check recomputes the answer its own way and says pass, or fails with a hint.

A failed check raises `ExerciseCheckFailed` (an AssertionError), so a solution notebook whose answer is wrong
fails its test run, and a learner sees the hint in red right under the cell.
"""

from __future__ import annotations


class ExerciseCheckFailed(AssertionError):
    pass


def passed(exercise: str, detail: str = "") -> None:
    print(f"✅ {exercise}: passed{' (' + detail + ')' if detail else ''}")


def require(condition: bool, exercise: str, problem: str, hint: str) -> None:
    if not condition:
        raise ExerciseCheckFailed(f"❌ {exercise}: {problem}\nHint: {hint}")
