"""Quizzes: the banks in quizzes/*.yaml (schema, the course's five questions), the grader, the terminal quiz
and the notebook widget."""

from __future__ import annotations

import re
from collections import Counter

import pytest
import yaml

from labcloud import quiz
from labcloud.quiz import Question, Quiz

QUESTION_KEYS = {"id", "type", "prompt", "answer", "explanation", "origin", "choices", "tolerance", "unit"}
FILES = quiz.quiz_files()


def _all_questions() -> list[Question]:
    return [q for path in FILES for q in quiz.load_quiz(path.name[:2]).questions]


def _text(question: Question) -> str:
    return " ".join([question.prompt, *question.choices, question.explanation])


def _right_response(question: Question):
    if question.type in ("single", "multiple", "numeric"):
        return question.answer
    return question.answer[0]


# ---------------------------------------------------------------------------------------------------------
# The banks
# ---------------------------------------------------------------------------------------------------------


def test_there_is_one_bank_per_section():
    assert [p.name[:2] for p in FILES] == [f"{n:02d}" for n in range(1, 11)]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_bank_loads_and_has_a_valid_schema(path):
    raw = yaml.safe_load(path.read_text())
    assert raw["section"] == path.name[:2]
    assert raw["title"].strip()
    loaded = quiz.load_quiz(path.name[:2])
    assert loaded.section == path.name[:2]
    assert len(loaded.questions) == len(raw["questions"]) >= 5
    for row, q in zip(raw["questions"], loaded.questions, strict=True):
        assert set(row) <= QUESTION_KEYS, f"{q.id}: unknown keys {set(row) - QUESTION_KEYS}"
        assert q.id.startswith(path.name[:2] + "-"), q.id
        assert q.type in quiz.TYPES, q.id
        assert q.origin in ("lab", "course"), q.id
        assert q.prompt.strip() and q.explanation.strip(), q.id
        if q.type == "single":
            assert len(q.choices) >= 2, q.id
            assert isinstance(q.answer, int) and 0 <= q.answer < len(q.choices), q.id
        elif q.type == "multiple":
            assert len(q.choices) >= 2, q.id
            assert isinstance(q.answer, list) and q.answer, q.id
            assert len(set(q.answer)) == len(q.answer), f"{q.id}: repeated answer index"
            assert all(isinstance(i, int) and 0 <= i < len(q.choices) for i in q.answer), q.id
        elif q.type == "numeric":
            assert "tolerance" in row, f"{q.id}: numeric questions must state their tolerance"
            assert isinstance(q.answer, int | float) and not isinstance(q.answer, bool), q.id
            assert isinstance(q.tolerance, int | float) and q.tolerance >= 0, q.id
            assert not q.choices, q.id
        else:  # short
            assert isinstance(q.answer, list) and q.answer, q.id
            assert all(isinstance(a, str) and a.strip() for a in q.answer), q.id
            assert not q.choices, q.id
        # The grader accepts the bank's own answer, and shows it as text.
        assert quiz.is_correct(q, _right_response(q)), q.id
        assert q.expected_text().strip(), q.id


def test_question_ids_are_unique_across_all_banks():
    counts = Counter(q.id for q in _all_questions())
    assert [i for i, n in counts.items() if n > 1] == []


def test_every_question_type_is_used():
    assert {q.type for q in _all_questions()} == set(quiz.TYPES)


def test_load_quiz_accepts_a_section_number_and_rejects_an_unknown_one():
    assert quiz.load_quiz("1").section == "01"
    assert quiz.load_quiz(9).section == "09"
    with pytest.raises(FileNotFoundError, match="no quiz for section 42"):
        quiz.load_quiz("42")


# ---------------------------------------------------------------------------------------------------------
# The course's five questions (origin: course), taught correctly
# ---------------------------------------------------------------------------------------------------------

COURSE_TOPICS = {
    # topic: (words all found in the question, words found in its correct answer)
    "torch_distributed": (["torch_distributed", "instance_count"], ["torch_distributed", "instance_count"]),
    "spot notice": (["spot", "two-minute"], ["two-minute", "checkpoint"]),
    "label leakage": (["input_label_cols", "leakage"], ["leakage", "input_label_cols"]),
    "KEDA vs HPA": (["KEDA", "HPA"], ["KEDA", "zero"]),
    "MLflow with S3": (["MLflow", "s3://"], ["tracking server", "s3://"]),
}


def _course_questions() -> list[Question]:
    return [q for q in _all_questions() if q.origin == "course"]


def test_exactly_five_questions_come_from_the_course():
    assert len(_course_questions()) == 5


@pytest.mark.parametrize("topic", COURSE_TOPICS)
def test_each_course_topic_has_exactly_one_question_with_the_right_answer(topic):
    in_question, in_answer = COURSE_TOPICS[topic]
    matches = [q for q in _course_questions() if all(w.lower() in _text(q).lower() for w in in_question)]
    assert len(matches) == 1, [q.id for q in matches]
    (question,) = matches
    assert question.type == "single"
    right = question.choices[question.answer].lower()
    assert all(w.lower() in right for w in in_answer), (question.id, right)


def test_the_mlflow_question_says_the_tracking_uri_cannot_be_s3():
    (question,) = [q for q in _course_questions() if "mlflow" in _text(q).lower()]
    assert re.search(r"s3:// is not a (valid )?tracking (backend|uri)", question.explanation, re.IGNORECASE)
    # The answer that sets the tracking URI to the bucket is offered, and it is wrong.
    s3_tracking = [i for i, c in enumerate(question.choices) if "MLFLOW_TRACKING_URI=s3://" in c]
    assert s3_tracking and question.answer not in s3_tracking


def test_the_spot_question_contrasts_aws_and_gcp_notice_times():
    (question,) = [q for q in _course_questions() if "two-minute" in _text(q)]
    assert "30 seconds" in question.explanation  # GCP's notice, next to AWS's two minutes


# ---------------------------------------------------------------------------------------------------------
# The grader
# ---------------------------------------------------------------------------------------------------------

SINGLE = Question("t-single", "single", "Pick b", 1, "Because b.", choices=["a", "b", "c"])
MULTIPLE = Question("t-multi", "multiple", "Pick a, c, e", [0, 2, 4], "Odd ones.", choices=list("abcde"))
NUMERIC = Question("t-num", "numeric", "How many?", 20, "Twenty.", tolerance=0.5, unit="GB")
EXACT = Question("t-exact", "numeric", "Seconds?", 30, "Thirty.", tolerance=0, unit="s")
SHORT = Question("t-short", "short", "Which method?", ["deploy", "deploy()", "Estimator.deploy"], "It deploys.")
TWO_WORDS = Question("t-words", "short", "Which layer?", ["silver layer"], "Silver.")


@pytest.mark.parametrize(
    "question, response, right",
    [
        (SINGLE, 1, True),
        (SINGLE, "1", True),
        (SINGLE, 0, False),
        (SINGLE, 2, False),
        (SINGLE, None, False),
        (MULTIPLE, [0, 2, 4], True),
        (MULTIPLE, [4, 0, 2], True),
        (MULTIPLE, (2, 4, 0), True),
        (MULTIPLE, [0, 2], False),  # a subset is not enough
        (MULTIPLE, [0, 1, 2, 4], False),  # nor is a superset
        (MULTIPLE, [], False),
        (MULTIPLE, None, False),
        (NUMERIC, 20, True),
        (NUMERIC, "20", True),
        (NUMERIC, " 20.0 ", True),
        (NUMERIC, 23, False),
        (EXACT, 30, True),
        (EXACT, "30", True),
        (EXACT, 30.001, False),
        (EXACT, 29, False),
        (SHORT, "deploy", True),
        (SHORT, "estimator.deploy", True),
        (SHORT, "wrong", False),
        (SHORT, "fit", False),
        (SHORT, None, False),
    ],
)
def test_right_and_wrong_answers_for_each_type(question, response, right):
    assert quiz.is_correct(question, response) is right


@pytest.mark.parametrize(
    "response, right",
    [
        (20.5, True),  # exactly at the tolerance
        (19.5, True),
        ("20.5", True),
        ("19.5", True),
        (20.5001, False),  # just beyond
        (19.4999, False),
        ("20.51", False),
        ("twenty", False),  # not a number
        ("20 GB", False),
        ("", False),
        ("nan", False),
        ("inf", False),
        ([20], False),
    ],
)
def test_numeric_tolerance_edges(response, right):
    assert quiz.is_correct(NUMERIC, response) is right


def test_every_bank_numeric_answer_is_accepted_exactly_at_its_tolerance():
    rejected = []
    for q in _all_questions():
        if q.type == "numeric" and q.tolerance:
            for edge in (q.answer + q.tolerance, q.answer - q.tolerance):
                # What a learner would type: the edge value written out in decimal.
                if not quiz.is_correct(q, f"{edge:.10g}"):
                    rejected.append((q.id, f"{edge:.10g}"))
    assert rejected == []


@pytest.mark.parametrize(
    "question, response",
    [
        (SHORT, "DEPLOY"),
        (SHORT, "  deploy  "),
        (SHORT, "\tDeploy()\n"),
        (SHORT, "`deploy()`"),
        (SHORT, "  `deploy`  "),
        (SHORT, "'deploy'"),
        (SHORT, '"Estimator.DEPLOY"'),
        (TWO_WORDS, "Silver   Layer"),
        (TWO_WORDS, "silver\nlayer"),
    ],
)
def test_short_answers_ignore_case_whitespace_and_backticks(question, response):
    assert quiz.is_correct(question, response)


@pytest.mark.parametrize("response", ["deploy it", "de ploy", "silver", "`fit`", ""])
def test_short_answers_still_need_the_right_words(response):
    assert not quiz.is_correct(SHORT, response)
    assert not quiz.is_correct(TWO_WORDS, response)


def test_short_answers_ignore_spaces_inside_backticks():
    assert quiz.is_correct(SHORT, "` deploy `")


def test_grade_says_right_or_wrong_with_the_expected_answer_and_the_explanation():
    right = quiz.grade(SINGLE, 1)
    assert right.correct and right.message == "Correct. Because b."
    wrong = quiz.grade(SINGLE, 2)
    assert not wrong.correct and wrong.message == "Not quite: the answer is b. Because b."
    assert quiz.grade(MULTIPLE, [0]).message.startswith("Not quite: the answer is a; c; e.")
    assert quiz.grade(NUMERIC, 1).message.startswith("Not quite: the answer is 20 GB.")
    assert quiz.grade(SHORT, "x").message.startswith("Not quite: the answer is deploy.")


def test_score_counts_right_answers_and_treats_missing_ones_as_wrong():
    q = Quiz("99", "test", [SINGLE, MULTIPLE, NUMERIC, SHORT])
    assert quiz.score(q, {}) == (0, 4)
    assert quiz.score(q, {"t-single": 1, "t-num": "20.2", "t-short": "Deploy", "t-multi": [0, 2]}) == (3, 4)
    everything = {"t-single": 1, "t-num": 20, "t-short": "deploy()", "t-multi": [4, 2, 0], "unrelated": 5}
    assert quiz.score(q, everything) == (4, 4)


# ---------------------------------------------------------------------------------------------------------
# Terminal quiz
# ---------------------------------------------------------------------------------------------------------


def _terminal_answer(question: Question) -> str:
    if question.type == "single":
        return "abcdefghij"[question.answer]
    if question.type == "multiple":
        return ", ".join("abcdefghij"[i] for i in question.answer)
    if question.type == "numeric":
        return str(question.answer)
    return question.answer[0]


@pytest.mark.parametrize("section", [p.name[:2] for p in FILES])
def test_terminal_quiz_all_correct_scores_full_marks(section):
    questions = quiz.load_quiz(section).questions
    answers = iter([_terminal_answer(q) for q in questions])
    prompts, said = [], []

    def ask(prompt):
        prompts.append(prompt)
        return next(answers)

    assert quiz.run_terminal_quiz(section, ask=ask, say=said.append) == 0
    assert len(prompts) == len(questions)
    assert said[-1] == f"Score: {len(questions)}/{len(questions)}"
    assert not any(s.strip().startswith("Not quite") for s in said)
    assert sum(s.strip().startswith("Correct.") for s in said) == len(questions)


def test_terminal_quiz_lists_choices_by_letter_and_grades_wrong_letters():
    questions = quiz.load_quiz("01").questions
    said = []
    # Uppercase letters are read too; "z" is not a choice, so that question is wrong.
    answers = iter(["B", "z", "nonsense", "A, C, E", "82.8", "d", "b"])
    quiz.run_terminal_quiz("01", ask=lambda _: next(answers), say=said.append)
    assert "   a) " + questions[0].choices[0] in said
    assert said[-1] == f"Score: 4/{len(questions)}"  # q1, q4, q5, q6 right
    assert sum(s.strip().startswith("Not quite") for s in said) == len(questions) - 4


def test_terminal_quiz_stops_cleanly_at_end_of_input():
    questions = quiz.load_quiz("01").questions
    said, calls = [], []

    def ask(prompt):
        calls.append(prompt)
        if len(calls) == 1:
            return _terminal_answer(questions[0])
        raise EOFError

    assert quiz.run_terminal_quiz("01", ask=ask, say=said.append) == 0
    assert len(calls) == 2  # asked no further after the EOF
    assert any("quiz stopped" in s for s in said)
    assert said[-1] == f"Score: 1/{len(questions)}"


# ---------------------------------------------------------------------------------------------------------
# Notebook widget
# ---------------------------------------------------------------------------------------------------------


def _set_answer(box, question: Question, right: bool):
    control = box.children[1]
    if question.type == "single":
        control.value = question.answer if right else (question.answer + 1) % len(question.choices)
    elif question.type == "multiple":
        chosen = set(question.answer) if right else set(question.answer[:-1])
        for i, checkbox in enumerate(control.children):
            checkbox.value = i in chosen
    elif question.type == "numeric":
        control.value = str(question.answer if right else question.answer + question.tolerance + 1)
    else:
        control.value = question.answer[0] if right else "certainly not this"


@pytest.mark.parametrize("section", ["01", "02"])  # 01 has single, multiple, numeric; 02 adds short
def test_quiz_widget_checks_answers_and_updates_the_score(section):
    import ipywidgets as w

    questions = quiz.load_quiz(section).questions
    widget = quiz.quiz_widget(section)
    assert isinstance(widget, w.VBox)
    header, *boxes, total = widget.children
    assert f"Quiz {section}" in header.value
    assert len(boxes) == len(questions)
    assert total.value == f"<b>Score: 0/{len(questions)}</b>"

    first = boxes[0]
    button, feedback = first.children[2], first.children[3]
    assert isinstance(button, w.Button) and button.description == "Check"
    button.click()  # nothing chosen yet: wrong
    assert "Not quite" in feedback.value and total.value == f"<b>Score: 0/{len(questions)}</b>"

    for n, (box, question) in enumerate(zip(boxes, questions, strict=True), 1):
        _set_answer(box, question, right=False)
        box.children[2].click()
        assert "Not quite" in box.children[3].value, question.id
        assert total.value == f"<b>Score: {n - 1}/{len(questions)}</b>"
        _set_answer(box, question, right=True)
        box.children[2].click()
        assert "Correct." in box.children[3].value, question.id
        assert total.value == f"<b>Score: {n}/{len(questions)}</b>"

    # Changing a right answer to a wrong one and checking again takes the point back.
    _set_answer(boxes[0], questions[0], right=False)
    boxes[0].children[2].click()
    assert total.value == f"<b>Score: {len(questions) - 1}/{len(questions)}</b>"
