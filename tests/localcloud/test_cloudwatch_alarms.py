"""CloudWatch alarms on the local cloud are evaluated: M of N datapoints against the threshold, percentiles,
missing data, state reasons and history in CloudWatch's words, SNS actions, validation, and state kept on restart.

Datapoints carry explicit timestamps in the recent past, so no test waits for real minutes to pass.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace
from xml.etree import ElementTree

import pytest
from aws_clients import clients
from botocore.exceptions import ClientError

from labcloud.localcloud import control
from labcloud.localcloud.aws.context import ACCOUNT_ID
from labcloud.localcloud.aws.services.cloudwatch import AlarmEvaluator, Rule, judge, period_datapoints, state_reason

THRESHOLD = 50.0


@pytest.fixture
def cloudwatch():
    session = control.status()
    assert session is not None, "the root conftest starts a local cloud for the session"
    return clients(session, "cloudwatch")[0]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def this_minute() -> dt.datetime:
    """The middle of the current minute: datapoints placed from it never sit on a period boundary."""
    return dt.datetime.now(dt.timezone.utc).replace(second=30, microsecond=0)


def reason_time(moment: dt.datetime) -> str:
    return moment.replace(second=0).strftime("%d/%m/%y %H:%M:%S")


class Metric:
    """One metric (namespace, name, dimensions) and alarms on it, through boto3."""

    def __init__(self, cloudwatch, name: str = "PredictionLatency"):
        self.cw = cloudwatch
        self.namespace = unique("MLModel/Inference")
        self.name = name
        self.dimensions = [{"Name": "ModelName", "Value": "sentiment-v2"}]
        self.base = this_minute()  # fixed once, so that a minute turning over mid-test moves no datapoint

    def minute_ago(self, minutes: int) -> dt.datetime:
        return self.base - dt.timedelta(minutes=minutes)

    def put(self, value: float, at: dt.datetime, count: int = 1) -> None:
        self.put_all([(value, at, count)])

    def put_all(self, points: list[tuple[float, dt.datetime, int]]) -> None:
        """Datapoints (value, timestamp, how many times) in one PutMetricData call."""
        data = []
        for value, at, count in points:
            datum = {"MetricName": self.name, "Timestamp": at, "Unit": "Milliseconds", "Dimensions": self.dimensions}
            datum.update({"Value": value} if count == 1 else {"Values": [value], "Counts": [float(count)]})
            data.append(datum)
        self.cw.put_metric_data(Namespace=self.namespace, MetricData=data)

    def alarm(self, **settings) -> str:
        name = unique("latency-high")
        arguments = dict(
            AlarmName=name,
            Namespace=self.namespace,
            MetricName=self.name,
            Dimensions=self.dimensions,
            Statistic="Average",
            Period=60,
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold=THRESHOLD,
            ComparisonOperator="GreaterThanThreshold",
        )
        arguments.update(settings)
        if "ExtendedStatistic" in settings:
            del arguments["Statistic"]
        self.cw.put_metric_alarm(**arguments)
        return name

    def state(self, alarm: str) -> dict:
        return self.cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"][0]


def sns_to_sqs(sns, sqs) -> tuple[str, str]:
    topic = sns.create_topic(Name=unique("alarms"))["TopicArn"]
    queue = sqs.create_queue(QueueName=unique("alarm-inbox"))["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)
    return topic, queue


def notifications(sqs, queue: str, expected: int) -> list[dict]:
    """The alarm notifications the queue received (SNS envelopes unwrapped), waiting briefly for `expected`."""
    received = []
    for _ in range(5):
        answer = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        received += [json.loads(m["Body"]) for m in answer.get("Messages", [])]
        if len(received) >= expected:
            break
    return [{"Subject": envelope["Subject"], **json.loads(envelope["Message"])} for envelope in received]


def test_alarm_goes_insufficient_data_ok_alarm_ok_with_m_of_n_datapoints(cloudwatch):
    metric = Metric(cloudwatch)
    at = metric.minute_ago
    alarm = metric.alarm()
    state = metric.state(alarm)
    assert (state["StateValue"], state["StateReason"]) == ("INSUFFICIENT_DATA", "Unchecked: Initial alarm creation")

    metric.put(45.3, at(0))
    state = metric.state(alarm)
    assert state["StateValue"] == "OK"
    assert state["StateReason"] == (
        f"Threshold Crossed: 1 out of the last 1 datapoints [45.3 ({reason_time(at(0))})] was not greater "
        "than the threshold (50.0) (minimum 1 datapoint for INSUFFICIENT_DATA -> OK transition)."
    )

    metric.put(52.0, at(1))  # one breaching datapoint of two: 2 are needed
    assert metric.state(alarm)["StateValue"] == "OK"

    metric.put(55.0, at(2))
    state = metric.state(alarm)
    assert state["StateValue"] == "ALARM"
    assert state["StateReason"] == (
        f"Threshold Crossed: 2 out of the last 3 datapoints [52.0 ({reason_time(at(1))}), "
        f"55.0 ({reason_time(at(2))})] were greater than the threshold (50.0) "
        "(minimum 2 datapoints for OK -> ALARM transition)."
    )
    reason_data = json.loads(state["StateReasonData"])
    assert reason_data["statistic"] == "Average" and reason_data["period"] == 60
    assert reason_data["recentDatapoints"] == [55.0, 52.0, 45.3]
    assert reason_data["threshold"] == THRESHOLD

    # Nine more datapoints of 10.0 in each of those minutes: their averages fall to 14.2 and 14.5.
    metric.put_all([(10.0, at(1), 9), (10.0, at(2), 9)])
    state = metric.state(alarm)
    assert state["StateValue"] == "OK"
    assert state["StateReason"].startswith(
        f"Threshold Crossed: 3 out of the last 3 datapoints [45.3 ({reason_time(at(0))}), "
        f"14.2 ({reason_time(at(1))}), 14.5 ({reason_time(at(2))})] were not greater than"
    )
    assert state["StateReason"].endswith("(minimum 2 datapoints for ALARM -> OK transition).")

    newest_first = cloudwatch.describe_alarm_history(AlarmName=alarm)["AlarmHistoryItems"]
    assert [item["HistorySummary"] for item in newest_first] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from OK to ALARM",
        "Alarm updated from INSUFFICIENT_DATA to OK",
        f'Alarm "{alarm}" created',
    ]
    updates = cloudwatch.describe_alarm_history(
        AlarmName=alarm, HistoryItemType="StateUpdate", ScanBy="TimestampAscending"
    )["AlarmHistoryItems"]
    states = [json.loads(item["HistoryData"]) for item in updates]
    assert [(s["oldState"]["stateValue"], s["newState"]["stateValue"]) for s in states] == [
        ("INSUFFICIENT_DATA", "OK"),
        ("OK", "ALARM"),
        ("ALARM", "OK"),
    ]
    assert states[1]["newState"]["stateReason"].startswith("Threshold Crossed: 2 out of the last 3 datapoints")
    assert all(item["AlarmName"] == alarm and item["HistoryItemType"] == "StateUpdate" for item in updates)

    # Changing the alarm keeps its state and history, and evaluates it again at once.
    metric.alarm(AlarmName=alarm, Threshold=10.0)
    assert metric.state(alarm)["StateReason"].startswith("Threshold Crossed: 3 out of the last 3 datapoints")
    latest = cloudwatch.describe_alarm_history(AlarmName=alarm, MaxRecords=2)["AlarmHistoryItems"]
    assert [item["HistorySummary"] for item in latest] == ["Alarm updated from OK to ALARM", f'Alarm "{alarm}" updated']

    cloudwatch.delete_alarms(AlarmNames=[alarm])
    assert cloudwatch.describe_alarms(AlarmNames=[alarm])["MetricAlarms"] == []
    history = cloudwatch.describe_alarm_history(AlarmName=alarm)["AlarmHistoryItems"]
    assert history[0]["HistorySummary"] == f'Alarm "{alarm}" deleted' and len(history) == 7


def test_percentile_alarm_judges_the_tail_not_the_average(cloudwatch):
    metric = Metric(cloudwatch)
    for latency in range(1, 11):  # 1..10 ms in one minute: average 5.5, p90 9
        metric.put(float(latency), metric.minute_ago(0))
    p90_over_8 = metric.alarm(ExtendedStatistic="p90", Threshold=8.5, EvaluationPeriods=1, DatapointsToAlarm=1)
    p90_over_9 = metric.alarm(ExtendedStatistic="p90", Threshold=9.5, EvaluationPeriods=1, DatapointsToAlarm=1)
    average_over_8 = metric.alarm(Threshold=8.5, EvaluationPeriods=1, DatapointsToAlarm=1)

    assert metric.state(p90_over_8)["StateValue"] == "ALARM"
    assert (
        f"[9.0 ({reason_time(metric.minute_ago(0))})] was greater than the threshold (8.5)"
        in (metric.state(p90_over_8)["StateReason"])
    )
    assert metric.state(p90_over_8)["ExtendedStatistic"] == "p90"
    assert json.loads(metric.state(p90_over_8)["StateReasonData"])["statistic"] == "p90"
    assert metric.state(p90_over_9)["StateValue"] == "OK"
    assert metric.state(average_over_8)["StateValue"] == "OK"


def test_treat_missing_data_breaching_not_breaching_missing_and_ignore(cloudwatch):
    metric = Metric(cloudwatch)
    metric.put(99.0, metric.minute_ago(30))  # long before the evaluation range: it does not count
    breaching = metric.alarm(TreatMissingData="breaching")
    not_breaching = metric.alarm(TreatMissingData="notBreaching")
    missing = metric.alarm(TreatMissingData="missing")
    ignore = metric.alarm(TreatMissingData="ignore")

    assert metric.state(breaching)["StateValue"] == "ALARM"
    assert metric.state(breaching)["StateReason"] == (
        "Threshold Crossed: no datapoints were received for 3 periods and 3 missing datapoints were treated as "
        "[Breaching]."
    )
    assert metric.state(not_breaching)["StateValue"] == "OK"
    assert metric.state(not_breaching)["StateReason"].endswith("were treated as [NonBreaching].")
    assert metric.state(missing)["StateValue"] == "INSUFFICIENT_DATA"
    assert metric.state(ignore)["StateValue"] == "INSUFFICIENT_DATA"  # ignore keeps the state it has

    metric.put(60.0, metric.minute_ago(0))  # one breaching datapoint; 2 of 3 are needed
    assert metric.state(breaching)["StateValue"] == "ALARM"  # 1 real + 2 missing treated as breaching
    assert metric.state(not_breaching)["StateValue"] == "OK"  # 1 of 3 is not enough
    assert metric.state(missing)["StateValue"] == "ALARM"  # judged on the one datapoint there is
    assert metric.state(ignore)["StateValue"] == "INSUFFICIENT_DATA"  # the missing ones would decide: kept


def test_alarm_actions_publish_the_notification_to_sns_subscribers(cloudwatch):
    session = control.status()
    sns, sqs = clients(session, "sns", "sqs")
    topic, queue = sns_to_sqs(sns, sqs)
    metric = Metric(cloudwatch)
    alarm = metric.alarm(TreatMissingData="breaching", AlarmActions=[topic], OKActions=[topic])

    (message,) = notifications(sqs, queue, expected=1)
    assert message["Subject"] == f'ALARM: "{alarm}" in US East (N. Virginia)'
    assert (message["AlarmName"], message["OldStateValue"], message["NewStateValue"]) == (
        alarm,
        "INSUFFICIENT_DATA",
        "ALARM",
    )
    assert message["Trigger"]["MetricName"] == "PredictionLatency" and message["Trigger"]["Threshold"] == THRESHOLD
    assert message["Trigger"]["Dimensions"] == [{"value": "sentiment-v2", "name": "ModelName"}]

    for minutes in (0, 1, 2):
        metric.put(1.0, metric.minute_ago(minutes))
    (message,) = notifications(sqs, queue, expected=1)
    assert (message["OldStateValue"], message["NewStateValue"]) == ("ALARM", "OK")
    actions = cloudwatch.describe_alarm_history(AlarmName=alarm, HistoryItemType="Action")["AlarmHistoryItems"]
    assert [item["HistorySummary"] for item in actions] == [f"Successfully executed action {topic}"] * 2


def test_set_alarm_state_still_works_and_is_recorded(cloudwatch):
    metric = Metric(cloudwatch)
    alarm = metric.alarm()
    cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="ALARM", StateReason="testing the pager")
    state = metric.state(alarm)
    assert (state["StateValue"], state["StateReason"]) == ("ALARM", "testing the pager")
    (latest, *_) = cloudwatch.describe_alarm_history(AlarmName=alarm)["AlarmHistoryItems"]
    assert latest["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    with pytest.raises(ClientError) as bad_state:
        cloudwatch.set_alarm_state(AlarmName=alarm, StateValue="PANIC", StateReason="x")
    assert bad_state.value.response["Error"]["Code"] == "ValidationError"


@pytest.mark.parametrize(
    "change, message_part",
    [
        ({"Threshold": None}, "Threshold must be set"),
        ({"ComparisonOperator": "BiggerThan"}, "Value 'BiggerThan' at 'comparisonOperator' failed to satisfy"),
        ({"DatapointsToAlarm": 5}, "DatapointsToAlarm must be less than or equal to EvaluationPeriods"),
        ({"TreatMissingData": "sometimes"}, "Option sometimes is not supported"),
        ({"Statistic": "Median"}, "Value 'Median' at 'statistic' failed to satisfy constraint"),
    ],
)
def test_bad_alarms_get_cloudwatch_validation_errors_and_the_cloud_stays_up(cloudwatch, change, message_part):
    metric = Metric(cloudwatch)
    name = unique("bad")
    arguments = dict(
        AlarmName=name,
        Namespace=metric.namespace,
        MetricName=metric.name,
        Statistic="Average",
        Period=60,
        EvaluationPeriods=3,
        Threshold=THRESHOLD,
        ComparisonOperator="GreaterThanThreshold",
    )
    arguments.update(change)
    with pytest.raises(ClientError) as error:
        cloudwatch.put_metric_alarm(**{k: v for k, v in arguments.items() if v is not None})
    assert error.value.response["Error"]["Code"] == "ValidationError"
    assert error.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert message_part in error.value.response["Error"]["Message"]
    assert cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"] == []


def test_the_query_protocol_of_older_sdks_is_answered_too(cloudwatch):
    metric = Metric(cloudwatch)
    alarm = metric.alarm()
    url = control.status().url + "/"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        "Authorization": "AWS4-HMAC-SHA256 Credential=k/20260101/us-east-1/monitoring/aws4_request",
    }
    history = f"Action=DescribeAlarmHistory&Version=2010-08-01&AlarmName={alarm}".encode()
    with control._opener.open(urllib.request.Request(url, data=history, headers=headers), timeout=5) as answer:
        document = ElementTree.fromstring(answer.read())
    summaries = [element.text for element in document.iter() if element.tag.endswith("HistorySummary")]
    assert summaries == [f'Alarm "{alarm}" created']
    bad = f"Action=PutMetricAlarm&Version=2010-08-01&AlarmName={alarm}&EvaluationPeriods=1&ComparisonOperator=Up"
    with pytest.raises(urllib.error.HTTPError) as error:
        control._opener.open(urllib.request.Request(url, data=bad.encode(), headers=headers), timeout=5)
    assert error.value.code == 400 and "<Code>ValidationError</Code>" in error.value.read().decode()


def test_the_course_code_runs_unchanged_after_connect_local():
    script = r"""
import boto3, json, sys, labcloud
labcloud.connect("local")
name = sys.argv[1]
cloudwatch = boto3.client("cloudwatch")
dims = [{"Name": "ModelName", "Value": "sentiment-v2"}]
cloudwatch.put_metric_data(Namespace="MLModel/Course", MetricData=[
    {"MetricName": "PredictionLatency", "Value": 45.3, "Unit": "Milliseconds", "Dimensions": dims}])
cloudwatch.put_metric_alarm(AlarmName=name, Namespace="MLModel/Course", MetricName="PredictionLatency",
    Dimensions=dims, ExtendedStatistic="p99", Period=60, EvaluationPeriods=3, DatapointsToAlarm=2, Threshold=100.0,
    ComparisonOperator="GreaterThanThreshold", TreatMissingData="notBreaching")
alarm = cloudwatch.describe_alarms(AlarmNames=[name])["MetricAlarms"][0]
print(json.dumps([alarm["StateValue"], alarm["StateReason"]]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script, unique("course-p99-latency")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    state, reason = json.loads(result.stdout.splitlines()[-1])
    assert state == "OK"
    assert "[45.3 (" in reason and "was not greater than the threshold (100.0)" in reason
    assert "and 2 missing datapoints were treated as [NonBreaching]" in reason


def test_alarm_state_and_history_survive_a_restart(own_cloud):
    (cw,) = clients(own_cloud, "cloudwatch")
    metric = Metric(cw)
    for minutes in (0, 1):
        metric.put(80.0, metric.minute_ago(minutes))
    alarm = metric.alarm()
    before = metric.state(alarm)
    assert before["StateValue"] == "ALARM"

    control.stop(own_cloud.state_dir)
    info = control.start(own_cloud.state_dir, port=0)
    (cw,) = clients(info, "cloudwatch")
    metric.cw = cw
    after = metric.state(alarm)
    assert (after["StateValue"], after["StateReason"]) == ("ALARM", before["StateReason"])
    assert after["StateUpdatedTimestamp"] == before["StateUpdatedTimestamp"]
    history = cw.describe_alarm_history(AlarmName=alarm)["AlarmHistoryItems"]
    assert [item["HistorySummary"] for item in history] == [
        "Alarm updated from INSUFFICIENT_DATA to ALARM",
        f'Alarm "{alarm}" created',
    ]
    metric.put(1.0, metric.minute_ago(0), count=20)  # still evaluated after the restart
    assert metric.state(alarm)["StateValue"] == "OK"


def test_time_passing_alone_moves_an_alarm_as_its_datapoints_leave_the_evaluation_range():
    from moto.cloudwatch.models import MetricDatum

    now = dt.datetime(2026, 11, 26, 10, 2, 30)  # moto keeps naive UTC times
    datums = [MetricDatum("Lab", "Latency", 80.0, [], now - dt.timedelta(minutes=k)) for k in (0, 1)]

    def state_at(minutes_later: int, treat_missing: str) -> str | None:
        rule = Rule("Average", 60, 3, 2, THRESHOLD, "GreaterThanThreshold", treat_missing)
        verdict = judge(rule, period_datapoints(rule, datums, now + dt.timedelta(minutes=minutes_later)))
        return verdict and verdict.state

    assert state_at(0, "missing") == "ALARM"
    assert state_at(3, "missing") == "ALARM"  # still inside the evaluation range, which reaches past N periods
    assert state_at(6, "missing") == "INSUFFICIENT_DATA"
    assert state_at(6, "breaching") == "ALARM"
    assert state_at(6, "notBreaching") == "OK"
    assert state_at(6, "ignore") is None  # keep whatever state the alarm is in
    rule = Rule("Average", 60, 3, 2, THRESHOLD, "GreaterThanThreshold", "missing")
    verdict = judge(rule, period_datapoints(rule, datums, now + dt.timedelta(minutes=6)))
    assert state_reason(rule, verdict, "ALARM") == "Insufficient Data: 3 datapoints were unknown."


def test_the_background_tick_judges_data_stored_without_a_request():
    """Data that reaches moto by another way (a service writing metrics itself) is judged by the tick."""
    from moto.backends import get_backend

    dirty = []
    context = SimpleNamespace(
        lock=threading.RLock(),
        mark_dirty=dirty.append,
        in_background=lambda target, name, *args: target(*args),
        moto_backend=lambda service, region: get_backend(service)[ACCOUNT_ID][region],
    )
    backend = get_backend("cloudwatch")[ACCOUNT_ID]["ap-southeast-4"]  # this test process's own moto
    name = unique("tick")
    backend.put_metric_alarm(
        name=name,
        namespace="Lab/Tick",
        metric_name="QueueDepth",
        comparison_operator="GreaterThanOrEqualToThreshold",
        evaluation_periods=1,
        period=60,
        threshold=5.0,
        statistic="Maximum",
        description="",
        dimensions=[],
        alarm_actions=[],
    )
    try:
        evaluator = AlarmEvaluator(context)
        backend.put_metric_data("Lab/Tick", [{"MetricName": "QueueDepth", "Value": 9.0}])
        evaluator.tick()
        alarm = backend.alarms[name]
        assert alarm.state_value == "ALARM"
        assert alarm.state_reason.endswith(
            "was greater than or equal to the threshold (5.0) (minimum 1 datapoint for OK -> ALARM transition)."
        )
        assert dirty == ["cloudwatch"]
        evaluator.tick()  # nothing changed since: no work, nothing to save
        assert dirty == ["cloudwatch"]
    finally:
        backend.delete_alarms([name])
