"""Quizzes: question banks in quizzes/NN_topic.yaml, a grader, a notebook widget and a terminal mode."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .paths import course_root

TYPES = ("single", "multiple", "numeric", "short")


@dataclass(frozen=True)
class Question:
    id: str
    type: str
    prompt: str
    answer: object
    explanation: str
    origin: str = "lab"
    choices: list[str] = field(default_factory=list)
    tolerance: float = 0.0
    unit: str = ""

    def expected_text(self) -> str:
        if self.type == "single":
            return self.choices[self.answer]
        if self.type == "multiple":
            return "; ".join(self.choices[i] for i in self.answer)
        if self.type == "numeric":
            return f"{self.answer}{self.unit and ' ' + self.unit}"
        return self.answer[0]


@dataclass(frozen=True)
class Quiz:
    section: str
    title: str
    questions: list[Question]


@dataclass(frozen=True)
class Feedback:
    correct: bool
    message: str


def quiz_files() -> list[Path]:
    return sorted((course_root() / "quizzes").glob("[0-9][0-9]_*.yaml"))


def load_quiz(section: str) -> Quiz:
    section = f"{int(section):02d}"
    matches = [p for p in quiz_files() if p.name.startswith(section + "_")]
    if not matches:
        raise FileNotFoundError(f"no quiz for section {section} in {course_root() / 'quizzes'}")
    data = yaml.safe_load(matches[0].read_text())
    return Quiz(data["section"], data["title"], [Question(**q) for q in data["questions"]])


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", str(text).strip().strip("`'\"").strip().lower())


def is_correct(question: Question, response) -> bool:
    """Grade one response: a choice index (single), indexes (multiple), a number, or text (short)."""
    if response is None:
        return False
    if question.type == "single":
        return int(response) == question.answer
    if question.type == "multiple":
        return {int(r) for r in response} == set(question.answer)
    if question.type == "numeric":
        try:
            difference = abs(float(response) - float(question.answer))
            # isclose: an answer exactly at the tolerance must not fail on float rounding (1.51 - 1.5 > 0.01)
            return difference <= question.tolerance or math.isclose(difference, question.tolerance, abs_tol=1e-12)
        except (TypeError, ValueError):
            return False
    if question.type == "short":
        return _normalise(response) in {_normalise(a) for a in question.answer}
    raise ValueError(f"unknown question type {question.type!r}")


def grade(question: Question, response) -> Feedback:
    if is_correct(question, response):
        return Feedback(True, f"Correct. {question.explanation}")
    return Feedback(False, f"Not quite: the answer is {question.expected_text()}. {question.explanation}")


def score(quiz: Quiz, responses: dict[str, object]) -> tuple[int, int]:
    return sum(is_correct(q, responses.get(q.id)) for q in quiz.questions), len(quiz.questions)


# --- terminal ------------------------------------------------------------------------------------------------

_LETTERS = "abcdefghij"


def _parse_terminal(question: Question, text: str):
    text = text.strip()
    if question.type == "single":
        return _LETTERS.index(text.lower()) if len(text) == 1 and text.lower() in _LETTERS else None
    if question.type == "multiple":
        letters = [t.strip().lower() for t in re.split(r"[,\s]+", text) if t.strip()]
        return [_LETTERS.index(t) for t in letters if len(t) == 1 and t in _LETTERS]
    return text


def run_terminal_quiz(section: str, ask: Callable[[str], str] = input, say: Callable[[str], None] = print) -> int:
    quiz = load_quiz(section)
    say(f"Quiz {quiz.section}: {quiz.title} ({len(quiz.questions)} questions)\n")
    right = 0
    for number, question in enumerate(quiz.questions, 1):
        say(f"{number}. {question.prompt}")
        for letter, choice in zip(_LETTERS, question.choices, strict=False):
            say(f"   {letter}) {choice}")
        how = {
            "single": "a letter",
            "multiple": "letters, e.g. a,c",
            "numeric": "a number",
            "short": "a word",
        }
        try:
            response = _parse_terminal(question, ask(f"   your answer ({how[question.type]}): "))
        except EOFError:
            say("\n(no more input: quiz stopped)")
            break
        feedback = grade(question, response)
        right += feedback.correct
        say(f"   {feedback.message}\n")
    say(f"Score: {right}/{len(quiz.questions)}")
    return 0


# --- notebook widget -----------------------------------------------------------------------------------------


def quiz_widget(section: str):
    """An ipywidgets quiz: each question checks itself on demand and the score updates."""
    import ipywidgets as w

    quiz = load_quiz(section)
    results: dict[str, bool] = {}
    total = w.HTML()

    def update_total():
        total.value = f"<b>Score: {sum(results.values())}/{len(quiz.questions)}</b>"

    def question_box(number: int, question: Question):
        if question.type == "single":
            control = w.RadioButtons(options=[(c, i) for i, c in enumerate(question.choices)], index=None)
            read = lambda: control.value  # noqa: E731
        elif question.type == "multiple":
            boxes = [w.Checkbox(description=c, indent=False) for c in question.choices]
            control = w.VBox(boxes)
            read = lambda: [i for i, b in enumerate(boxes) if b.value]  # noqa: E731
        else:
            control = w.Text(placeholder="a number" if question.type == "numeric" else "your answer")
            read = lambda: control.value  # noqa: E731
        button, feedback = w.Button(description="Check"), w.HTML()

        def on_check(_):
            result = grade(question, read())
            results[question.id] = result.correct
            colour = "green" if result.correct else "#b00"
            feedback.value = f"<span style='color:{colour}'>{result.message}</span>"
            update_total()

        button.on_click(on_check)
        return w.VBox([w.HTML(f"<b>{number}.</b> {question.prompt}"), control, button, feedback])

    update_total()
    header = w.HTML(f"<h3>Quiz {quiz.section}: {quiz.title}</h3>")
    return w.VBox([header, *(question_box(n, q) for n, q in enumerate(quiz.questions, 1)), total])
