"""CloudWatch alarms with real boto3: PutMetricAlarm, DescribeAlarms (filters, pages, waiter),
SetAlarmState, DeleteAlarms, DescribeAlarmHistory; the evaluator on stored data, exactly once under
concurrent evaluators; another account sees none of it."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from tests.integration.cloudwatch import cw_helpers

# The SQL here is the same on both databases; PostgreSQL runs in test_cloudwatch_metrics_api.py (the
# store) and test_cloudwatch_exactly_once.py (concurrent evaluators).
pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

DIMS = cw_helpers.DIMS  # the helpers' alarm watches App/Backlog with these


def test_put_describe_update_delete_and_history(cw):
    cw_helpers.alarm(cw, AlarmDescription="backlog too long", Tags=[{"Key": "team", "Value": "ml"}])
    cw.get_waiter("alarm_exists").wait(AlarmNames=["jobs-high"], WaiterConfig={"Delay": 0.1, "MaxAttempts": 3})
    (alarm,) = cw.describe_alarms(AlarmNames=["jobs-high"])["MetricAlarms"]
    assert alarm["StateValue"] == "INSUFFICIENT_DATA"
    assert alarm["StateReason"] == "Unchecked: Initial alarm creation"
    assert alarm["AlarmArn"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:jobs-high"
    assert (alarm["DatapointsToAlarm"], alarm["TreatMissingData"]) == (2, "missing")
    cw.set_alarm_state(
        AlarmName="jobs-high", StateValue="ALARM", StateReason="testing", StateReasonData=json.dumps({"why": "a test"})
    )
    cw_helpers.alarm(cw, Threshold=20.0)  # an update keeps the state
    (alarm,) = cw.describe_alarms(AlarmNames=["jobs-high"])["MetricAlarms"]
    assert (alarm["StateValue"], alarm["Threshold"], alarm["StateReason"]) == ("ALARM", 20.0, "testing")
    assert json.loads(alarm["StateReasonData"]) == {"why": "a test"}
    with pytest.raises(cw.exceptions.InvalidFormatFault):
        cw.set_alarm_state(AlarmName="jobs-high", StateValue="OK", StateReason="x", StateReasonData="{not json")
    history = cw.describe_alarm_history(AlarmName="jobs-high")["AlarmHistoryItems"]
    assert [h["HistoryItemType"] for h in history] == ["ConfigurationUpdate", "StateUpdate", "ConfigurationUpdate"]
    assert history[1]["HistorySummary"] == "Alarm updated from INSUFFICIENT_DATA to ALARM"
    assert json.loads(history[0]["HistoryData"])["originalUpdatedFields"] == ["Threshold"]
    states = cw.describe_alarm_history(
        AlarmName="jobs-high", HistoryItemType="StateUpdate", ScanBy="TimestampAscending"
    )["AlarmHistoryItems"]
    assert [json.loads(h["HistoryData"])["newState"]["stateValue"] for h in states] == ["ALARM"]
    cw.delete_alarms(AlarmNames=["jobs-high", "no-such-alarm"])
    assert cw.describe_alarms()["MetricAlarms"] == []
    # History outlives the alarm.
    assert cw.describe_alarm_history(AlarmName="jobs-high")["AlarmHistoryItems"][0]["HistorySummary"] == (
        'Alarm "jobs-high" deleted'
    )


def test_describe_alarms_filters_and_pages(cw):
    for name in ("b-alarm", "a-alarm", "c-other"):
        cw_helpers.alarm(cw, name, AlarmActions=[f"arn:aws:sns:us-east-1:123456789012:{name}"])
    cw.set_alarm_state(AlarmName="c-other", StateValue="OK", StateReason="x")
    pages = list(cw.get_paginator("describe_alarms").paginate(PaginationConfig={"PageSize": 1}))
    assert [a["AlarmName"] for p in pages for a in p["MetricAlarms"]] == ["a-alarm", "b-alarm", "c-other"]
    assert len(pages) == 3
    assert [a["AlarmName"] for a in cw.describe_alarms(AlarmNamePrefix="c-")["MetricAlarms"]] == ["c-other"]
    assert [a["AlarmName"] for a in cw.describe_alarms(StateValue="OK")["MetricAlarms"]] == ["c-other"]
    by_action = cw.describe_alarms(ActionPrefix="arn:aws:sns:us-east-1:123456789012:b")["MetricAlarms"]
    assert [a["AlarmName"] for a in by_action] == ["b-alarm"]
    assert cw.describe_alarms(AlarmTypes=["CompositeAlarm"]) | {"ResponseMetadata": None} == {
        "MetricAlarms": [],
        "CompositeAlarms": [],
        "ResponseMetadata": None,
    }
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.describe_alarms(NextToken="not-a-token")
    found = cw.describe_alarms_for_metric(Namespace="App", MetricName="Backlog", Dimensions=DIMS)["MetricAlarms"]
    assert len(found) == 3


def test_put_metric_alarm_validation(cw):
    from botocore.exceptions import ClientError

    with pytest.raises(cw.exceptions.MissingRequiredParameterException):
        cw.put_metric_alarm(
            AlarmName="x",
            Namespace="App",
            MetricName="Backlog",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanThreshold",
        )
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException):
        cw_helpers.alarm(cw, "x", ExtendedStatistic="p99")
    with pytest.raises(cw.exceptions.InvalidParameterValueException, match="Period"):
        cw_helpers.alarm(cw, "x", Period=45)
    with pytest.raises(cw.exceptions.InvalidParameterValueException, match="DatapointsToAlarm"):
        cw_helpers.alarm(cw, "x", DatapointsToAlarm=4)
    with pytest.raises(cw.exceptions.InvalidParameterValueException, match="TreatMissingData"):
        cw_helpers.alarm(cw, "x", TreatMissingData="sometimes")
    with pytest.raises(ClientError) as err:
        cw_helpers.alarm(
            cw,
            "x",
            Statistic=None,
            ExtendedStatistic=None,
            Metrics=[{"Id": "m", "Expression": "m1*2"}],
            MetricName=None,
            Namespace=None,
            Period=None,
            Dimensions=None,
        )
    assert err.value.response["Error"]["Code"] == "NotImplemented"
    with pytest.raises(cw.exceptions.ResourceNotFound):
        cw.set_alarm_state(AlarmName="x", StateValue="OK", StateReason="no such alarm")
    assert cw.describe_alarms()["MetricAlarms"] == []


def test_evaluator_judges_m_of_n_on_whole_periods(cw, db, session_factory):
    now = cw_helpers.soon()
    cw_helpers.alarm(cw)
    cw_helpers.backdate(db, cw_helpers.minute(now, -8), "jobs-high")
    for offset, value in ((-5, 3.0), (-4, 15.0), (-3, 5.0), (-2, 12.0)):
        cw_helpers.put(cw, cw_helpers.minute(now, offset), value)
    assert cw_helpers.evaluate(session_factory, now + dt.timedelta(seconds=11)) == 1
    (alarm,) = cw.describe_alarms()["MetricAlarms"]
    # The newest three whole periods: 15, 5, 12 → two breach (2 of 3).
    assert alarm["StateValue"] == "ALARM", alarm["StateReason"]
    assert alarm["StateReason"].startswith("Threshold Crossed: 2 out of the last 3 datapoints [12.0 (")
    data = json.loads(alarm["StateReasonData"])
    assert (data["period"], data["statistic"], data["threshold"]) == (60, "Maximum", 10.0)
    assert [p["value"] for p in data["evaluatedDatapoints"]] == [12.0, 5.0, 15.0]
    # The same period is never judged twice; the next one is, once it is whole.
    assert cw_helpers.evaluate(session_factory, now + dt.timedelta(seconds=20)) == 0
    cw_helpers.put(cw, cw_helpers.minute(now, -1), 1.0)
    cw_helpers.put(cw, cw_helpers.minute(now, 0), 1.0)
    assert cw_helpers.evaluate(session_factory, now + dt.timedelta(minutes=1, seconds=11)) == 1
    (alarm,) = cw.describe_alarms()["MetricAlarms"]
    assert alarm["StateValue"] == "OK"
    history = cw.describe_alarm_history(AlarmName="jobs-high", HistoryItemType="StateUpdate")["AlarmHistoryItems"]
    assert [h["HistorySummary"] for h in history] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from INSUFFICIENT_DATA to ALARM",
    ]


@pytest.mark.parametrize(
    ("treat", "state"),
    [("missing", "INSUFFICIENT_DATA"), ("breaching", "ALARM"), ("notBreaching", "OK"), ("ignore", "OK")],
)
def test_evaluator_treats_missing_data(cw, db, session_factory, treat, state):
    now = cw_helpers.soon()
    cw_helpers.alarm(cw, TreatMissingData=treat)
    cw.set_alarm_state(AlarmName="jobs-high", StateValue="OK", StateReason="set by the test")
    cw_helpers.backdate(db, cw_helpers.minute(now, -8), "jobs-high")
    cw_helpers.evaluate(session_factory, now + dt.timedelta(seconds=11))
    (alarm,) = cw.describe_alarms()["MetricAlarms"]
    assert alarm["StateValue"] == state
    if treat == "ignore":
        assert alarm["StateReason"] == "set by the test"


def test_another_account_sees_no_alarms(cw, clients, other):
    cw_helpers.alarm(cw)
    theirs = clients("cloudwatch", access_key=other["access_key"], secret_key=other["secret_key"])
    assert theirs.describe_alarms()["MetricAlarms"] == []
    assert theirs.describe_alarm_history()["AlarmHistoryItems"] == []
    with pytest.raises(theirs.exceptions.ResourceNotFound):
        theirs.set_alarm_state(AlarmName="jobs-high", StateValue="ALARM", StateReason="sabotage")
    theirs.delete_alarms(AlarmNames=["jobs-high"])
    # Their alarm of the same name is theirs alone.
    cw_helpers.alarm(theirs, Threshold=99.0)
    assert [a["Threshold"] for a in cw.describe_alarms()["MetricAlarms"]] == [10.0]
    assert [a["AlarmArn"] for a in theirs.describe_alarms()["MetricAlarms"]] == [
        f"arn:aws:cloudwatch:us-east-1:{other['account_id']}:alarm:jobs-high"
    ]
