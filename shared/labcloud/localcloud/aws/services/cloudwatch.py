"""CloudWatch alarms that are really evaluated: moto stores metric data and alarms, this module judges them.

moto keeps what PutMetricData and PutMetricAlarm send but leaves every alarm where it was put. Here each metric
alarm is evaluated the way CloudWatch documents it ("Evaluating an alarm", "Configuring how CloudWatch alarms treat
missing data"): the metric's datapoints are aggregated with the alarm's statistic (or percentile) per period; the
most recent EvaluationPeriods (N) datapoints are compared with the threshold, and DatapointsToAlarm (M) of them
breaching means ALARM. CloudWatch looks a little further back than N periods (the evaluation range) for real
datapoints, and only when fewer than N exist does TreatMissingData fill in the rest.

Alarms are evaluated when they are put, when PutMetricData touches their namespace, and by a background tick
(every second, doing work only when the data, the alarms or the evaluation minute changed). A state change is
written into moto's alarm (so DescribeAlarms shows it and it is saved with moto's state), recorded in the alarm
history (DescribeAlarmHistory, which moto lacks, is answered here), and runs the alarm's SNS topic actions by
publishing CloudWatch's notification JSON through the local cloud's own SNS.

Deliberate differences from CloudWatch, for a course that cannot wait for minutes to close:
- the newest period is the one still open, so a datapoint counts the moment it is put (CloudWatch waits until
  the minute is over);
- a state set with SetAlarmState holds until the next evaluation minute (at least SET_STATE_HOLD_S seconds),
  then the alarm returns to what its data says, as CloudWatch's next evaluation does;
- metric math alarms, anomaly detection comparisons and composite alarms are stored but not evaluated;
  percentiles are nearest-rank over the raw values; EvaluateLowSampleCountPercentile is not applied.
"""

from __future__ import annotations

import json
import logging
import math
import operator
import re
import threading
import time
import uuid
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from urllib.parse import parse_qsl

from moto.cloudwatch.exceptions import ValidationError
from moto.cloudwatch.models import MetricAggregatedDatum
from moto.core.parse import PROTOCOL_PARSERS
from moto.core.request import determine_request_protocol
from moto.core.serialize import SerializationContext, XFormedAttributePicker, get_serializer_class
from moto.core.utils import get_service_model, utcnow

from ..context import ACCOUNT_ID, AwsContext
from ..errors import Response
from ..requests import AwsRequest, read_body

log = logging.getLogger(__name__)

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"

# Static-threshold comparisons: the words CloudWatch's state reasons use, and the test for a breach.
COMPARISONS: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "GreaterThanOrEqualToThreshold": ("greater than or equal to", operator.ge),
    "GreaterThanThreshold": ("greater than", operator.gt),
    "LessThanThreshold": ("less than", operator.lt),
    "LessThanOrEqualToThreshold": ("less than or equal to", operator.le),
}
# These compare with an anomaly detection band (ThresholdMetricId); accepted, stored, not evaluated here.
BAND_COMPARISONS = ("LessThanLowerOrGreaterThanUpperThreshold", "LessThanLowerThreshold", "GreaterThanUpperThreshold")
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
TREAT_MISSING = ("missing", "ignore", "breaching", "notBreaching")
PERCENTILE = re.compile(r"^p(100(\.0{1,2})?|\d{1,2}(\.\d{1,2})?)$")

EXTRA_PERIODS = 2  # how much further back than N periods the evaluation range reaches (CloudWatch: "a few")
SET_STATE_HOLD_S = 10
TICK_S = 1.0
HISTORY_LIMIT = 10_000  # per region; CloudWatch keeps 30 days of history
HISTORY_PAGE = 100


# --- the wire: parse requests and write answers with moto's own parser and serializer (JSON and query) ---


@cache
def _service_model():
    return get_service_model("cloudwatch")


def _protocol(environ: dict) -> str:
    return determine_request_protocol(_service_model(), environ.get("CONTENT_TYPE", ""))


def parse_params(request: AwsRequest, environ: dict) -> dict:
    """The request's parameters, typed by the API model (numbers, timestamps as naive UTC datetimes)."""
    body = read_body(environ)
    protocol = _protocol(environ)
    values = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)) if protocol == "query" else {}
    parser = PROTOCOL_PARSERS[protocol](_service_model().operation_model(request.action))
    request_dict = {
        "method": request.method,
        "values": values,
        "headers": {},
        "body": body,
        "url_path": request.path,
        "url_params": {},
    }
    return dict(parser.parse(request_dict))


def respond(request: AwsRequest, environ: dict, result: object) -> Response:
    """Serialize a result (a dict shaped like the operation's output, or a moto CloudWatch error) for the caller."""
    protocol = _protocol(environ)
    request_id = str(uuid.uuid4())
    serializer = get_serializer_class("cloudwatch", protocol)(
        operation_model=_service_model().operation_model(request.action),
        context=SerializationContext(request_id=request_id),
        value_picker=XFormedAttributePicker(),
    )
    out = serializer.serialize(result)
    headers = {**out["headers"], "x-amzn-RequestId": request_id}
    if protocol == "json":
        headers["Content-Type"] = "application/x-amz-json-1.0"
    body = out["body"]
    return out["status_code"], list(headers.items()), body.encode() if isinstance(body, str) else body


# --- PutMetricAlarm's input, checked the way CloudWatch checks it (moto accepts nearly anything) ---


def _enum_problem(field: str, value, allowed: Iterable[str]) -> str:
    shown = "null" if value is None else f"'{value}'"
    constraint = (
        "Member must not be null"
        if value is None
        else f"Member must satisfy enum value set: [{', '.join(sorted(allowed))}]"
    )
    return f"1 validation error detected: Value {shown} at '{field}' failed to satisfy constraint: {constraint}"


def _minimum_problem(field: str, value: int, minimum: int) -> str:
    return (
        f"1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: "
        f"Member must have value greater than or equal to {minimum}"
    )


def alarm_problem(params: dict) -> str | None:
    """What CloudWatch would refuse in these PutMetricAlarm parameters, or None."""
    comparison = params.get("ComparisonOperator")
    if comparison not in COMPARISONS and comparison not in BAND_COMPARISONS:
        return _enum_problem("comparisonOperator", comparison, [*COMPARISONS, *BAND_COMPARISONS])
    evaluation_periods = params.get("EvaluationPeriods")
    if evaluation_periods is None or evaluation_periods < 1:
        return _minimum_problem("evaluationPeriods", evaluation_periods, 1)
    datapoints = params.get("DatapointsToAlarm")
    if datapoints is not None and datapoints < 1:
        return _minimum_problem("datapointsToAlarm", datapoints, 1)
    if datapoints is not None and datapoints > evaluation_periods:
        return "DatapointsToAlarm must be less than or equal to EvaluationPeriods."
    treat = params.get("TreatMissingData")
    if treat is not None and treat not in TREAT_MISSING:
        return (
            f"Option {treat} is not supported. Supported options for parameter TreatMissingData are "
            "missing, ignore, breaching and notBreaching."
        )
    return _threshold_problem(params, comparison) or _metric_problem(params)


def _threshold_problem(params: dict, comparison: str) -> str | None:
    if "Threshold" in params and "ThresholdMetricId" in params:
        return "Threshold and ThresholdMetricId cannot both be set"
    if comparison in BAND_COMPARISONS and "ThresholdMetricId" not in params:
        return f"ThresholdMetricId must be set when ComparisonOperator is {comparison}."
    if comparison in COMPARISONS and "Threshold" not in params:
        return f"Threshold must be set when ComparisonOperator is {comparison}."
    return None


def _metric_problem(params: dict) -> str | None:
    if params.get("Metrics"):
        for field in ("Statistic", "ExtendedStatistic", "Namespace", "MetricName", "Period", "Dimensions", "Unit"):
            if field in params:
                return f"{field} should not be set if list of Metrics is set."
        return None
    for field in ("Namespace", "MetricName", "Period"):
        if field not in params:
            return f"{field} must be set if list of Metrics is not set."
    statistic, extended = params.get("Statistic"), params.get("ExtendedStatistic")
    if (statistic is None) == (extended is None):
        return "Exactly one of Statistic and ExtendedStatistic must be set."
    if statistic is not None and statistic not in STATISTICS:
        return _enum_problem("statistic", statistic, STATISTICS)
    if extended is not None and not PERCENTILE.match(extended):
        return f"The value {extended} for parameter ExtendedStatistic is not supported."
    period = params["Period"]
    if period not in (10, 20, 30) and (period < 60 or period % 60):
        return "The parameter Period must be 10, 20, 30 or a multiple of 60."
    return None


# --- evaluation: pure functions of an alarm's rule and its metric's datapoints ---


@dataclass(frozen=True)
class Rule:
    """What an alarm asks, in the terms the evaluation needs."""

    statistic: str  # Average, ..., or a percentile such as p99
    period: int
    evaluation_periods: int  # N
    datapoints_to_alarm: int  # M
    threshold: float
    comparison: str
    treat_missing: str

    @classmethod
    def of(cls, alarm) -> Rule | None:
        """The rule of a moto alarm, or None for alarms this module does not evaluate."""
        if alarm.rule is not None or alarm.metric_data_queries or alarm.comparison_operator not in COMPARISONS:
            return None
        statistic = alarm.extended_statistic or alarm.statistic
        if statistic is None or alarm.threshold is None or not alarm.period or not alarm.evaluation_periods:
            return None
        return cls(
            statistic=statistic,
            period=int(alarm.period),
            evaluation_periods=int(alarm.evaluation_periods),
            datapoints_to_alarm=int(alarm.datapoints_to_alarm or alarm.evaluation_periods),
            threshold=float(alarm.threshold),
            comparison=alarm.comparison_operator,
            treat_missing=alarm.treat_missing_data or "missing",
        )

    @property
    def words(self) -> str:
        return COMPARISONS[self.comparison][0]

    def breaches(self, value: float) -> bool:
        return COMPARISONS[self.comparison][1](value, self.threshold)


@dataclass(frozen=True)
class Datapoint:
    start: datetime  # the period's start (naive UTC, as moto keeps time)
    value: float | None  # None: no data in this period
    sample_count: float = 0.0


@dataclass(frozen=True)
class Verdict:
    """The state the datapoints call for, and what the state reason says about it."""

    state: str
    shown: tuple[Datapoint, ...] = ()  # breaching datapoints for ALARM, the others for OK
    considered: int = 0  # real datapoints looked at
    needed: int = 0  # the minimum number of datapoints for this transition
    filled: int = 0  # missing datapoints filled in by TreatMissingData
    fill_as: str = ""  # Breaching, NonBreaching, or "" (ignored)
    evaluated: tuple[Datapoint, ...] = ()


def _percentile(samples: list[tuple[float, float]], percent: float) -> float | None:
    """Nearest-rank percentile of (value, count) samples: a value that was really observed."""
    total = sum(count for _, count in samples)
    if not total or any(value < 0 for value, _ in samples):  # CloudWatch has no percentiles of negative values
        return None
    rank = max(1.0, math.ceil(percent / 100 * total))
    seen = 0.0
    for value, count in sorted(samples):
        seen += count
        if seen >= rank:
            return value
    return sorted(samples)[-1][0]


def aggregate(datums: list, statistic: str) -> tuple[float | None, float]:
    """One period's datapoint from moto's stored datums: (value, sample count)."""
    singles = [d.value for d in datums if not isinstance(d, MetricAggregatedDatum)]
    sets = [d for d in datums if isinstance(d, MetricAggregatedDatum)]
    count = float(len(singles) + sum(s.sample_count for s in sets))
    if not count:
        return None, 0.0
    if statistic.startswith("p"):
        # Statistic sets only have percentiles when all their values are equal (docs: GetMetricStatistics).
        samples = [(v, 1.0) for v in singles] + [(s.min, s.sample_count) for s in sets if s.min == s.max]
        return _percentile(samples, float(statistic[1:])), count
    total = sum(singles) + sum(s.sum for s in sets)
    values = {
        "SampleCount": float(count),
        "Sum": total,
        "Average": total / count,
        "Minimum": min([*singles, *(s.min for s in sets)]),
        "Maximum": max([*singles, *(s.max for s in sets)]),
    }
    return values[statistic], count


def evaluation_end(now: datetime, period: int) -> datetime:
    """The end of the newest period: the end of the minute now in (of the 10-30 s slot for high resolution)."""
    step = min(period, 60)
    seconds = int((now - datetime(1970, 1, 1)).total_seconds())
    return datetime(1970, 1, 1) + timedelta(seconds=seconds - seconds % step + step)


def evaluation_range(rule: Rule, now: datetime) -> tuple[datetime, datetime]:
    """The time the evaluation looks at: N periods, and EXTRA_PERIODS more, up to the end of the newest."""
    end = evaluation_end(now, rule.period)
    return end - timedelta(seconds=rule.period * (rule.evaluation_periods + EXTRA_PERIODS)), end


def period_datapoints(rule: Rule, datums: Iterable, now: datetime) -> list[Datapoint]:
    """The datapoints of the evaluation range, newest period first (value None where no data came)."""
    start, end = evaluation_range(rule, now)
    buckets: list[list] = [[] for _ in range(rule.evaluation_periods + EXTRA_PERIODS)]
    for datum in datums:
        if start <= datum.timestamp < end:
            buckets[int((end - datum.timestamp).total_seconds() // rule.period)].append(datum)
    points = []
    for index, bucket in enumerate(buckets):
        value, count = aggregate(bucket, rule.statistic)
        points.append(Datapoint(end - timedelta(seconds=rule.period * (index + 1)), value, count))
    return points


def judge(rule: Rule, points: list[Datapoint]) -> Verdict | None:
    """The state the datapoints (newest first) call for; None when missing data says: keep the current state."""
    real = [p for p in points if p.value is not None]
    n, m = rule.evaluation_periods, rule.datapoints_to_alarm
    if len(real) >= n:  # enough real datapoints in the range: the most recent N decide, missing data plays no part
        return _threshold_verdict(rule, real[:n], m)
    missing = n - len(real)
    if rule.treat_missing == "missing":
        if not real:
            return Verdict(INSUFFICIENT_DATA, filled=n)
        return _threshold_verdict(rule, real, min(m, len(real)))  # judged on the datapoints there are
    if rule.treat_missing == "ignore":
        breaching = sum(rule.breaches(p.value) for p in real)
        if (breaching >= m) != (breaching + missing >= m):  # the missing datapoints would decide: keep the state
            return None
        return _threshold_verdict(rule, real, m, filled=missing)
    fill_as = "Breaching" if rule.treat_missing == "breaching" else "NonBreaching"
    return _threshold_verdict(rule, real, m, filled=missing, fill_as=fill_as)


def _threshold_verdict(rule: Rule, evaluated: list[Datapoint], m: int, filled: int = 0, fill_as: str = "") -> Verdict:
    breaching = tuple(p for p in evaluated if rule.breaches(p.value))
    counted = len(breaching) + (filled if fill_as == "Breaching" else 0)
    common = dict(considered=len(evaluated), filled=filled, fill_as=fill_as, evaluated=tuple(evaluated))
    if counted >= m:
        return Verdict(ALARM, breaching, needed=m, **common)
    others = tuple(p for p in evaluated if not rule.breaches(p.value))
    return Verdict(OK, others, needed=len(evaluated) + filled - m + 1, **common)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _was(count: int) -> str:
    return "was" if count == 1 else "were"


def _reason_time(moment: datetime) -> str:
    return moment.strftime("%d/%m/%y %H:%M:%S")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


def state_reason(rule: Rule, verdict: Verdict, old_state: str) -> str:
    """The StateReason, in CloudWatch's words."""
    if verdict.state == INSUFFICIENT_DATA:
        return f"Insufficient Data: {_plural(verdict.filled, 'datapoint')} {_was(verdict.filled)} unknown."
    fill = f"treated as [{verdict.fill_as}]" if verdict.fill_as else "ignored"
    if not verdict.considered:
        return (
            f"Threshold Crossed: no datapoints were received for {_plural(verdict.filled, 'period')} and "
            f"{_plural(verdict.filled, 'missing datapoint')} {_was(verdict.filled)} {fill}."
        )
    listed = ", ".join(f"{p.value!r} ({_reason_time(p.start)})" for p in verdict.shown)
    relation = rule.words if verdict.state == ALARM else f"not {rule.words}"
    text = (
        f"Threshold Crossed: {len(verdict.shown)} out of the last {verdict.considered} datapoints [{listed}] "
        f"{_was(len(verdict.shown))} {relation} the threshold ({rule.threshold!r})"
    )
    if verdict.filled:
        text += f" and {_plural(verdict.filled, 'missing datapoint')} {_was(verdict.filled)} {fill}"
    return f"{text} (minimum {_plural(verdict.needed, 'datapoint')} for {old_state} -> {verdict.state} transition)."


def state_reason_data(rule: Rule, verdict: Verdict, points: list[Datapoint], now: datetime) -> dict:
    """The StateReasonData document CloudWatch attaches to a threshold evaluation."""
    data = {
        "version": "1.0",
        "queryDate": _iso(now),
        "startDate": _iso(points[-1].start),
        "statistic": rule.statistic,
        "period": rule.period,
        "recentDatapoints": [p.value for p in reversed(verdict.evaluated)],
        "threshold": rule.threshold,
        "evaluatedDatapoints": [
            {"timestamp": _iso(p.start), "sampleCount": p.sample_count, "value": p.value} for p in verdict.evaluated
        ],
    }
    if rule.treat_missing != "missing":
        data["treatMissingData"] = rule.treat_missing
    return data


# --- the alarms in moto's backend: state, history, actions ---


@dataclass(frozen=True)
class Transition:
    """A state change, with what its actions need (taken under the lock, run outside it)."""

    region: str
    alarm_name: str
    actions: tuple[str, ...]
    subject: str
    message: str


def _region_name(region: str) -> str:
    return _region_names().get(region, region)


@cache
def _region_names() -> dict[str, str]:
    from botocore.loaders import Loader

    partitions = Loader().load_data("endpoints")["partitions"]
    return {code: info.get("description", code) for p in partitions for code, info in p["regions"].items()}


def _alarm_configuration(alarm) -> dict:
    return {
        "namespace": alarm.namespace,
        "metricName": alarm.metric_name,
        "dimensions": [{"name": d.name, "value": d.value} for d in alarm.dimensions],
        "statistic": alarm.statistic,
        "extendedStatistic": alarm.extended_statistic,
        "period": alarm.period,
        "evaluationPeriods": alarm.evaluation_periods,
        "datapointsToAlarm": alarm.datapoints_to_alarm,
        "threshold": alarm.threshold,
        "comparisonOperator": alarm.comparison_operator,
        "treatMissingData": alarm.treat_missing_data or "missing",
        "actionsEnabled": alarm.actions_enabled,
        "alarmActions": list(alarm.alarm_actions),
        "okActions": list(alarm.ok_actions),
        "insufficientDataActions": list(alarm.insufficient_data_actions),
    }


def notification(alarm, old_state: str, region: str, account: str) -> dict:
    """The JSON CloudWatch publishes to an alarm's SNS topics."""
    trigger = {
        "MetricName": alarm.metric_name,
        "Namespace": alarm.namespace,
        "StatisticType": "ExtendedStatistic" if alarm.extended_statistic else "Statistic",
        "Unit": alarm.unit,
        "Dimensions": [{"value": d.value, "name": d.name} for d in alarm.dimensions],
        "Period": alarm.period,
        "EvaluationPeriods": alarm.evaluation_periods,
        "DatapointsToAlarm": alarm.datapoints_to_alarm or alarm.evaluation_periods,
        "ComparisonOperator": alarm.comparison_operator,
        "Threshold": alarm.threshold,
        "TreatMissingData": alarm.treat_missing_data or "missing",
        "EvaluateLowSampleCountPercentile": alarm.evaluate_low_sample_count_percentile or "",
    }
    if alarm.extended_statistic:
        trigger["ExtendedStatistic"] = alarm.extended_statistic
    else:
        trigger["Statistic"] = (alarm.statistic or "").upper()
    return {
        "AlarmName": alarm.name,
        "AlarmDescription": alarm.description,
        "AWSAccountId": account,
        "AlarmConfigurationUpdatedTimestamp": _iso(alarm.configuration_updated_timestamp),
        "NewStateValue": alarm.state_value,
        "NewStateReason": alarm.state_reason,
        "StateChangeTime": _iso(alarm.state_updated_timestamp),
        "Region": _region_name(region),
        "AlarmArn": alarm.alarm_arn,
        "OldStateValue": old_state,
        "OKActions": list(alarm.ok_actions),
        "AlarmActions": list(alarm.alarm_actions),
        "InsufficientDataActions": list(alarm.insufficient_data_actions),
        "Trigger": trigger,
    }


def _history(backend) -> list[dict]:
    """The alarm history of one moto backend, kept on it so that it is saved and restored with moto's state."""
    if not hasattr(backend, "labcloud_alarm_history"):
        backend.labcloud_alarm_history = []
    return backend.labcloud_alarm_history


def record_history(backend, alarm_name: str, item_type: str, summary: str, data: dict) -> None:
    history = _history(backend)
    history.append(
        {
            "AlarmName": alarm_name,
            "AlarmType": "MetricAlarm",
            "Timestamp": utcnow(),
            "HistoryItemType": item_type,
            "HistorySummary": summary,
            "HistoryData": json.dumps(data),
        }
    )
    del history[:-HISTORY_LIMIT]


def _state_document(value: str, reason: str, reason_data: str | None) -> dict:
    document = {"stateValue": value, "stateReason": reason}
    try:
        parsed = json.loads(reason_data) if reason_data else None
    except ValueError:
        parsed = None
    if parsed:
        document["stateReasonData"] = parsed
    return document


def change_state(backend, alarm, state: str, reason: str, reason_data: str | None, account: str) -> Transition:
    """Put the alarm in a new state (in moto's model), record the change, and say what actions it runs."""
    old = (alarm.state_value, alarm.state_reason, alarm.state_reason_data)
    alarm.update_state(reason, reason_data, state)
    record_state_change(backend, alarm, old)
    return transition_of(backend, alarm, old[0], account)


def transition_of(backend, alarm, old_state: str, account: str) -> Transition:
    """The actions an alarm's move into its current state runs, with the notification they send."""
    actions = {ALARM: alarm.alarm_actions, OK: alarm.ok_actions, INSUFFICIENT_DATA: alarm.insufficient_data_actions}
    region = backend.region_name
    return Transition(
        region=region,
        alarm_name=alarm.name,
        actions=tuple(actions[alarm.state_value]) if alarm.actions_enabled else (),
        subject=f'{alarm.state_value}: "{alarm.name}" in {_region_name(region)}'[:100],
        message=json.dumps(notification(alarm, old_state, region, account)),
    )


def record_state_change(backend, alarm, old: tuple[str, str, str | None]) -> None:
    alarm.state_transitioned_timestamp = alarm.state_updated_timestamp
    record_history(
        backend,
        alarm.name,
        "StateUpdate",
        f"Alarm updated from {old[0]} to {alarm.state_value}",
        {
            "version": "1.0",
            "oldState": _state_document(*old),
            "newState": _state_document(alarm.state_value, alarm.state_reason, alarm.state_reason_data),
        },
    )


def history_page(backend, params: dict) -> dict:
    """DescribeAlarmHistory's answer from the recorded history, filtered, ordered and paged as CloudWatch does."""
    types = params.get("AlarmTypes") or ["MetricAlarm", "CompositeAlarm"]
    items = [
        item
        for item in _history(backend)
        if item["AlarmType"] in types
        and params.get("AlarmName") in (None, item["AlarmName"])
        and params.get("HistoryItemType") in (None, item["HistoryItemType"])
        and (params.get("StartDate") is None or item["Timestamp"] >= params["StartDate"])
        and (params.get("EndDate") is None or item["Timestamp"] <= params["EndDate"])
    ]
    if params.get("ScanBy", "TimestampDescending") == "TimestampDescending":
        items.reverse()  # recorded oldest first; equal timestamps keep the order they happened in
    start = int(params["NextToken"]) if str(params.get("NextToken", "")).isdigit() else 0
    size = params.get("MaxRecords") or HISTORY_PAGE
    more = start + size < len(items)
    return {"AlarmHistoryItems": items[start : start + size], "NextToken": str(start + size) if more else None}


class AlarmEvaluator:
    """Evaluates the alarms moto stores, on requests and on a background tick, and runs their actions."""

    def __init__(self, context: AwsContext):
        self.context = context
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._held_until: dict[tuple[str, str, str], float] = {}  # (account, region, alarm) -> epoch seconds
        self._seen: dict[tuple[str, str], tuple] = {}  # what the tick last evaluated each region on
        self._sns_clients: dict[str, object] = {}
        self._indexes: dict[tuple[str, str], MetricIndex] = {}  # (account, region) -> its datapoints by metric

    # request handlers

    def put_metric_alarm(self, request: AwsRequest, environ: dict) -> Response:
        try:
            params = parse_params(request, environ)
        except Exception:  # what moto's own parser cannot read, moto answers (with its error)
            return self.context.call_moto(request, environ)
        problem = alarm_problem(params)
        if problem:
            return respond(request, environ, ValidationError(problem))
        name = params.get("AlarmName")
        with self.context.lock:
            backend = self.context.moto_backend("cloudwatch", request.region)
            previous = backend.alarms.get(name)
            status, headers, body = self.context.call_moto(request, environ)
            if status >= 300 or name not in backend.alarms:
                return status, headers, body
            self._configured(backend, backend.alarms[name], previous)
            self._held_until.pop((ACCOUNT_ID, request.region, name), None)  # a changed alarm is judged again now
            transitions = self._evaluate(backend, ACCOUNT_ID, names={name})
            self.context.mark_dirty("cloudwatch")
        self._run_actions(transitions)
        return status, headers, body

    def put_metric_data(self, request: AwsRequest, environ: dict) -> Response:
        try:
            namespace = parse_params(request, environ).get("Namespace")
        except Exception:  # moto answers what it cannot read; every alarm is then evaluated
            namespace = None
        status, headers, body = self.context.call_moto(request, environ)
        if status >= 300:
            return status, headers, body
        with self.context.lock:
            backend = self.context.moto_backend("cloudwatch", request.region)
            names = {a.name for a in backend.alarms.values() if namespace in (None, a.namespace)}
            transitions = self._evaluate(backend, ACCOUNT_ID, names=names) if names else []
            if transitions:
                self.context.mark_dirty("cloudwatch")
        self._run_actions(transitions)
        return status, headers, body

    def set_alarm_state(self, request: AwsRequest, environ: dict) -> Response:
        """moto sets the state; the change is recorded, its actions run, and it holds until the next evaluation."""
        try:
            name = parse_params(request, environ).get("AlarmName")
        except Exception:
            name = None
        with self.context.lock:
            backend = self.context.moto_backend("cloudwatch", request.region)
            alarm = backend.alarms.get(name)
            old = (alarm.state_value, alarm.state_reason, alarm.state_reason_data) if alarm else None
            status, headers, body = self.context.call_moto(request, environ)
            if status >= 300 or alarm is None:
                return status, headers, body
            self._held_until[(ACCOUNT_ID, request.region, name)] = _next_evaluation_after_set(time.time())
            transitions = []
            if alarm.state_value != old[0]:
                record_state_change(backend, alarm, old)
                transitions = [transition_of(backend, alarm, old[0], ACCOUNT_ID)]
            self.context.mark_dirty("cloudwatch")
        self._run_actions(transitions)
        return status, headers, body

    def delete_alarms(self, request: AwsRequest, environ: dict) -> Response:
        """moto deletes; the history keeps the alarm's past and says it was deleted, as CloudWatch's does."""
        try:
            names = parse_params(request, environ).get("AlarmNames") or []
        except Exception:
            names = []
        with self.context.lock:
            backend = self.context.moto_backend("cloudwatch", request.region)
            existing = [name for name in names if name in backend.alarms]
            status, headers, body = self.context.call_moto(request, environ)
            if status < 300:
                for name in existing:
                    self._held_until.pop((ACCOUNT_ID, request.region, name), None)
                    record_history(
                        backend,
                        name,
                        "ConfigurationUpdate",
                        f'Alarm "{name}" deleted',
                        {"type": "Delete", "version": "1.0"},
                    )
                self.context.mark_dirty("cloudwatch")
        return status, headers, body

    def describe_alarm_history(self, request: AwsRequest, environ: dict) -> Response:
        try:
            params = parse_params(request, environ)
        except Exception as exc:
            return respond(request, environ, ValidationError(f"The request could not be read: {exc}"))
        with self.context.lock:
            page = history_page(self.context.moto_backend("cloudwatch", request.region), params)
        return respond(request, environ, page)

    # evaluation

    def _configured(self, backend, alarm, previous) -> None:
        """A new alarm starts INSUFFICIENT_DATA; a changed one keeps its state and history (moto made it anew)."""
        if previous is None:
            alarm.state_value = INSUFFICIENT_DATA
            alarm.state_transitioned_timestamp = alarm.state_updated_timestamp
            record_history(
                backend,
                alarm.name,
                "ConfigurationUpdate",
                f'Alarm "{alarm.name}" created',
                {"type": "Create", "version": "1.0", "createdAlarm": _alarm_configuration(alarm)},
            )
            return
        for attribute in ("state_value", "state_reason", "state_reason_data", "state_updated_timestamp", "history"):
            setattr(alarm, attribute, getattr(previous, attribute))
        alarm.state_transitioned_timestamp = getattr(previous, "state_transitioned_timestamp", None)
        record_history(
            backend,
            alarm.name,
            "ConfigurationUpdate",
            f'Alarm "{alarm.name}" updated',
            {
                "type": "Update",
                "version": "1.0",
                "originalAlarm": _alarm_configuration(previous),
                "updatedAlarm": _alarm_configuration(alarm),
            },
        )

    def _evaluate(self, backend, account: str, names: set[str] | None = None) -> list[Transition]:
        """Evaluate the backend's alarms (those named, or all) and apply the changes; hold the lock."""
        now, clock = utcnow(), time.time()
        rules = {}
        for alarm in list(backend.alarms.values()):
            if names is not None and alarm.name not in names:
                continue
            if self._held_until.get((account, backend.region_name, alarm.name), 0) > clock:
                continue
            rule = Rule.of(alarm)
            if rule is not None:
                rules[alarm.name] = (alarm, rule)
        if not rules:
            return []
        index = self._indexes.setdefault((account, backend.region_name), MetricIndex())
        transitions = []
        for alarm, rule in rules.values():
            try:
                datums = index.datums(backend, alarm, *evaluation_range(rule, now))
                transition = self._evaluate_one(backend, account, alarm, rule, datums, now)
            except Exception:  # a stored alarm this code cannot judge must not fail the request that stored data
                log.exception("could not evaluate alarm %s", alarm.name)
                continue
            if transition is not None:
                transitions.append(transition)
        return transitions

    @staticmethod
    def _evaluate_one(backend, account: str, alarm, rule: Rule, datums: list, now: datetime) -> Transition | None:
        points = period_datapoints(rule, datums, now)
        verdict = judge(rule, points)
        if verdict is None or verdict.state == alarm.state_value:
            return None
        old_state = alarm.state_value
        reason = state_reason(rule, verdict, old_state)
        reason_data = None
        if verdict.state != INSUFFICIENT_DATA:
            reason_data = json.dumps(state_reason_data(rule, verdict, points, now))
        log.info("alarm %s: %s -> %s (%s)", alarm.name, old_state, verdict.state, reason)
        return change_state(backend, alarm, verdict.state, reason, reason_data, account)

    # the tick

    def start(self) -> None:
        self._thread = self.context.in_background(self._run, "cloudwatch-alarms")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.tick()
            except Exception:  # one bad alarm must not stop the evaluation of all the others
                log.exception("alarm evaluation failed")

    def tick(self) -> None:
        """Evaluate the regions whose data, alarms, evaluation slot or state holds changed since the last tick."""
        from moto.backends import get_backend

        transitions = []
        clock = time.time()
        with self.context.lock:
            self._held_until = {key: until for key, until in self._held_until.items() if until > clock}
            for account, regions in list(get_backend("cloudwatch").items()):
                for region, backend in list(regions.items()):
                    if not backend.alarms:
                        continue
                    seen = (int(clock // 10), len(backend.metric_data), len(backend.alarms), len(self._held_until))
                    if self._seen.get((account, region)) == seen:
                        continue
                    self._seen[(account, region)] = seen
                    transitions += self._evaluate(backend, account)
            if transitions:
                self.context.mark_dirty("cloudwatch")
        self._run_actions(transitions)

    # actions

    def _run_actions(self, transitions: list[Transition]) -> None:
        pending = [t for t in transitions if t.actions]
        if pending:
            self.context.in_background(self._publish_all, "cloudwatch-alarm-actions", pending)

    def _publish_all(self, transitions: list[Transition]) -> None:
        for transition in transitions:
            for arn in transition.actions:
                outcome = self._publish(arn, transition)
                with self.context.lock:
                    backend = self.context.moto_backend("cloudwatch", transition.region)
                    succeeded = outcome is None
                    record_history(
                        backend,
                        transition.alarm_name,
                        "Action",
                        f"Successfully executed action {arn}" if succeeded else f"Failed to execute action {arn}",
                        {
                            "actionState": "Succeeded" if succeeded else "Failed",
                            "notificationResource": arn,
                            "stateUpdateTimestamp": int(time.time() * 1000),
                            **({} if succeeded else {"error": outcome}),
                        },
                    )
                    self.context.mark_dirty("cloudwatch")

    def _publish(self, arn: str, transition: Transition) -> str | None:
        """Publish the alarm's notification to an SNS topic; the error, or None when it was published."""
        parts = arn.split(":")
        if len(parts) < 6 or parts[2] != "sns":
            return "the local cloud runs only SNS topic actions"
        try:
            client = self._sns_clients.get(parts[3]) or self._sns_clients.setdefault(
                parts[3], self.context.client("sns", parts[3])
            )
            client.publish(TopicArn=arn, Subject=transition.subject, Message=transition.message)
        except Exception as exc:
            log.warning("alarm %s: action %s failed: %s", transition.alarm_name, arn, exc)
            return str(exc)
        return None


def _next_evaluation_after_set(clock: float) -> float:
    """When an alarm whose state was set is evaluated again: the next whole minute, at least a little later."""
    boundary = clock - clock % 60 + 60
    return boundary if boundary - clock >= SET_STATE_HOLD_S else boundary + 60


def _metric_key(namespace: str, name: str, dimensions) -> tuple:
    """A metric is its namespace, its name and its full set of dimensions."""
    return namespace, name, tuple(sorted((d.name, d.value) for d in dimensions))


class MetricIndex:
    """moto's stored datapoints of one backend by metric and in time order, extended as moto appends more."""

    def __init__(self):
        self._stored: list | None = None
        self._seen = 0
        self._by_metric: dict[tuple, list] = {}

    def datums(self, backend, alarm, start: datetime, end: datetime) -> list:
        """The datapoints of exactly the alarm's metric (and unit, when it names one) from start until end."""
        key = _metric_key(alarm.namespace, alarm.metric_name, alarm.dimensions)
        series = self._catch_up(backend).get(key, [])
        found = series[bisect_left(series, start, key=_timestamp) : bisect_left(series, end, key=_timestamp)]
        if alarm.namespace.startswith("AWS/S3"):  # S3's storage metrics are computed by moto on request
            found += [d for d in backend.aws_metric_data if _metric_key(d.namespace, d.name, d.dimensions) == key]
        return [datum for datum in found if alarm.unit in (None, datum.unit)]

    def _catch_up(self, backend) -> dict[tuple, list]:
        stored = backend.metric_data
        if stored is not self._stored or len(stored) < self._seen:  # restored or replaced: index afresh
            self._stored, self._seen, self._by_metric = stored, 0, {}
        for datum in stored[self._seen :]:
            series = self._by_metric.setdefault(_metric_key(datum.namespace, datum.name, datum.dimensions), [])
            insort(series, datum, key=_timestamp)  # datapoints mostly come in time order: cheap
        self._seen = len(stored)
        return self._by_metric


def _timestamp(datum) -> datetime:
    return datum.timestamp


def register(gateway, context: AwsContext) -> None:
    alarms = AlarmEvaluator(context)
    gateway.intercept("cloudwatch", "PutMetricAlarm", alarms.put_metric_alarm)
    gateway.intercept("cloudwatch", "PutMetricData", alarms.put_metric_data)
    gateway.intercept("cloudwatch", "SetAlarmState", alarms.set_alarm_state)
    gateway.intercept("cloudwatch", "DeleteAlarms", alarms.delete_alarms)
    gateway.intercept("cloudwatch", "DescribeAlarmHistory", alarms.describe_alarm_history)
    context.on_started(alarms.start)
    context.on_shutdown(alarms.stop)
