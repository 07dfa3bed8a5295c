"""CloudWatch metrics with real boto3 on a loopback port: PutMetricData, GetMetricStatistics,
GetMetricData, ListMetrics, both protocols, the platform's own metrics, retention, isolation."""

from __future__ import annotations

import datetime as dt

import pytest
from botocore.exceptions import ClientError

DIMS = [{"Name": "Host", "Value": "a"}]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _minute(minutes_ago: int) -> dt.datetime:
    return _now().replace(second=0, microsecond=0) - dt.timedelta(minutes=minutes_ago)


def test_put_and_get_statistics_with_percentiles(cw):
    start = _minute(10)
    cw.put_metric_data(
        Namespace="App",
        MetricData=[
            {
                "MetricName": "Latency",
                "Dimensions": DIMS,
                "Timestamp": start + dt.timedelta(minutes=1),
                "Values": [10.0, 20.0, 30.0, 40.0],
                "Counts": [1, 1, 1, 97],
                "Unit": "Milliseconds",
            },
            {
                "MetricName": "Latency",
                "Dimensions": DIMS,
                "Timestamp": start + dt.timedelta(minutes=1, seconds=30),
                "Value": 5.0,
                "Unit": "Milliseconds",
            },
            {
                "MetricName": "Latency",
                "Dimensions": DIMS,
                "Timestamp": start + dt.timedelta(minutes=3),
                "StatisticValues": {"SampleCount": 4, "Sum": 100, "Minimum": 10, "Maximum": 40},
                "Unit": "Milliseconds",
            },
        ],
    )
    got = cw.get_metric_statistics(
        Namespace="App",
        MetricName="Latency",
        Dimensions=DIMS,
        StartTime=start,
        EndTime=start + dt.timedelta(minutes=5),
        Period=60,
        Statistics=["SampleCount", "Sum", "Average", "Minimum", "Maximum"],
    )
    assert got["Label"] == "Latency"
    first, second = sorted(got["Datapoints"], key=lambda p: p["Timestamp"])
    assert first["Timestamp"] == start + dt.timedelta(minutes=1)
    assert (first["SampleCount"], first["Sum"], first["Minimum"], first["Maximum"]) == (101, 3945, 5, 40)
    assert first["Unit"] == "Milliseconds" and second["Average"] == 25
    pct = cw.get_metric_statistics(
        Namespace="App",
        MetricName="Latency",
        Dimensions=DIMS,
        StartTime=start,
        EndTime=start + dt.timedelta(minutes=5),
        Period=60,
        ExtendedStatistics=["p50", "p99"],
    )
    first, second = sorted(pct["Datapoints"], key=lambda p: p["Timestamp"])
    assert first["ExtendedStatistics"]["p50"] == pytest.approx(40, rel=0.01)
    # A statistic set of unequal samples carries no percentiles, as on CloudWatch.
    assert second["ExtendedStatistics"] == {}
    # Another dimension set is another metric; another unit filters everything out.
    assert (
        cw.get_metric_statistics(
            Namespace="App", MetricName="Latency", StartTime=start, EndTime=_now(), Period=60, Statistics=["Sum"]
        )["Datapoints"]
        == []
    )
    assert (
        cw.get_metric_statistics(
            Namespace="App",
            MetricName="Latency",
            Dimensions=DIMS,
            StartTime=start,
            EndTime=_now(),
            Period=60,
            Statistics=["Sum"],
            Unit="Seconds",
        )["Datapoints"]
        == []
    )


def test_metric_validation_uses_cloudwatch_codes(cw):
    now = _now()
    with pytest.raises(cw.exceptions.InvalidParameterValueException, match="Namespace"):
        cw.put_metric_data(Namespace="AWS/EC2", MetricData=[{"MetricName": "X", "Value": 1.0}])
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException, match="mutually exclusive"):
        cw.put_metric_data(Namespace="App", MetricData=[{"MetricName": "X", "Value": 1.0, "Values": [1.0]}])
    with pytest.raises(cw.exceptions.InvalidParameterValueException, match="two weeks"):
        cw.put_metric_data(
            Namespace="App", MetricData=[{"MetricName": "X", "Value": 1.0, "Timestamp": now - dt.timedelta(days=15)}]
        )
    with pytest.raises(cw.exceptions.InvalidParameterValueException, match="Period"):
        cw.get_metric_statistics(
            Namespace="App",
            MetricName="X",
            StartTime=now - dt.timedelta(hours=1),
            EndTime=now,
            Period=45,
            Statistics=["Sum"],
        )
    with pytest.raises(cw.exceptions.InvalidParameterCombinationException, match="exceeds the limit of 1,440"):
        cw.get_metric_statistics(
            Namespace="App",
            MetricName="X",
            StartTime=now - dt.timedelta(days=2),
            EndTime=now,
            Period=60,
            Statistics=["Sum"],
        )
    with pytest.raises(cw.exceptions.MissingRequiredParameterException):
        cw.get_metric_statistics(
            Namespace="App", MetricName="X", StartTime=now - dt.timedelta(hours=1), EndTime=now, Period=60
        )
    with pytest.raises(ClientError) as err:
        cw.get_metric_data(
            MetricDataQueries=[{"Id": "e1", "Expression": "SUM(METRICS())"}],
            StartTime=now - dt.timedelta(hours=1),
            EndTime=now,
        )
    assert err.value.response["Error"]["Code"] == "NotImplemented"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 501
    with pytest.raises(ClientError) as err:
        cw.put_composite_alarm(AlarmName="c", AlarmRule="ALARM(a)")
    assert err.value.response["Error"]["Code"] == "NotImplemented"


def test_get_metric_data_is_newest_first_and_pages(cw):
    start = _minute(8)
    cw.put_metric_data(
        Namespace="App",
        MetricData=[
            {"MetricName": "Requests", "Value": float(i), "Timestamp": start + dt.timedelta(minutes=i)}
            for i in range(6)
        ],
    )
    query = {
        "Id": "requests",
        "MetricStat": {"Metric": {"Namespace": "App", "MetricName": "Requests"}, "Period": 60, "Stat": "Sum"},
    }
    window = {"StartTime": start, "EndTime": start + dt.timedelta(minutes=7)}
    (result,) = cw.get_metric_data(MetricDataQueries=[query], **window)["MetricDataResults"]
    assert result["Values"] == [5, 4, 3, 2, 1, 0] and result["StatusCode"] == "Complete"
    assert result["Timestamps"][0] == start + dt.timedelta(minutes=5) and result["Label"] == "Requests"
    ascending = cw.get_metric_data(MetricDataQueries=[query], ScanBy="TimestampAscending", **window)
    assert ascending["MetricDataResults"][0]["Values"] == [0, 1, 2, 3, 4, 5]
    pages = list(
        cw.get_paginator("get_metric_data").paginate(
            MetricDataQueries=[query, {**query, "Id": "again", "Label": "twice"}], MaxDatapoints=4, **window
        )
    )
    assert len(pages) == 3
    values = [v for page in pages for r in page["MetricDataResults"] if r["Id"] == "requests" for v in r["Values"]]
    assert values == [5, 4, 3, 2, 1, 0]
    assert pages[0]["MetricDataResults"][0]["StatusCode"] == "PartialData"
    with pytest.raises(cw.exceptions.InvalidNextToken):
        cw.get_metric_data(MetricDataQueries=[query], NextToken="bogus", **window)


def test_list_metrics_filters_and_recent_activity(cw):
    old = _now() - dt.timedelta(hours=5)
    cw.put_metric_data(
        Namespace="App",
        MetricData=[
            {"MetricName": "Latency", "Dimensions": [{"Name": "Host", "Value": "a"}], "Value": 1.0},
            {"MetricName": "Latency", "Dimensions": [{"Name": "Host", "Value": "b"}], "Value": 1.0, "Timestamp": old},
            {"MetricName": "Errors", "Value": 1.0},
        ],
    )
    names = {(m["MetricName"], tuple(d["Value"] for d in m["Dimensions"])) for m in cw.list_metrics()["Metrics"]}
    assert names == {("Latency", ("a",)), ("Latency", ("b",)), ("Errors", ())}
    hosts = cw.list_metrics(Namespace="App", Dimensions=[{"Name": "Host"}])["Metrics"]
    assert len(hosts) == 2
    only_b = cw.list_metrics(Dimensions=[{"Name": "Host", "Value": "b"}])["Metrics"]
    assert [m["Dimensions"] for m in only_b] == [[{"Name": "Host", "Value": "b"}]]
    recent = cw.list_metrics(RecentlyActive="PT3H")["Metrics"]
    assert {m["Dimensions"][0]["Value"] for m in recent if m["Dimensions"]} == {"a"}
    assert cw.list_metrics(Namespace="Other")["Metrics"] == []


def test_query_protocol_clients(cw_query, cw):
    start = _minute(3)
    cw_query.put_metric_data(
        Namespace="Legacy",
        MetricData=[
            {
                "MetricName": "Jobs",
                "Dimensions": [{"Name": "Queue", "Value": "q1"}],
                "Value": 7.0,
                "Timestamp": start + dt.timedelta(seconds=10),
            }
        ],
    )
    stats = cw_query.get_metric_statistics(
        Namespace="Legacy",
        MetricName="Jobs",
        Dimensions=[{"Name": "Queue", "Value": "q1"}],
        StartTime=start,
        EndTime=start + dt.timedelta(minutes=2),
        Period=60,
        Statistics=["Sum", "Maximum"],
    )
    assert [(p["Sum"], p["Maximum"]) for p in stats["Datapoints"]] == [(7.0, 7.0)]
    assert stats["ResponseMetadata"]["HTTPHeaders"]["content-type"].startswith("text/xml")
    cw_query.put_metric_alarm(
        AlarmName="jobs-high",
        Namespace="Legacy",
        MetricName="Jobs",
        Dimensions=[{"Name": "Queue", "Value": "q1"}],
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
    )
    (alarm,) = cw_query.describe_alarms(AlarmNames=["jobs-high"])["MetricAlarms"]
    assert alarm["StateValue"] == "INSUFFICIENT_DATA" and alarm["Dimensions"] == [{"Name": "Queue", "Value": "q1"}]
    # The same alarm through JSON: one service, two protocols.
    assert cw.describe_alarms(AlarmNames=["jobs-high"])["MetricAlarms"][0]["AlarmArn"] == alarm["AlarmArn"]
    with pytest.raises(cw_query.exceptions.ResourceNotFound):
        cw_query.set_alarm_state(AlarmName="nope", StateValue="OK", StateReason="x")
    with pytest.raises(cw_query.exceptions.InvalidParameterValueException):
        cw_query.put_metric_data(Namespace="AWS/Lambda", MetricData=[{"MetricName": "X", "Value": 1.0}])
    names = [m["MetricName"] for m in cw_query.list_metrics(Namespace="Legacy")["Metrics"]]
    assert names == ["Jobs"]
    cw_query.delete_alarms(AlarmNames=["jobs-high", "never-existed"])
    assert cw.describe_alarms()["MetricAlarms"] == []


def test_platform_metrics_are_cloudwatch_metrics(cw, session_factory):
    """What the data plane flushes is AWS/SageMaker's metrics for the account, per variant."""
    import asyncio

    from tests.conftest import ACCOUNT_ID

    from neurondock_platform.dataplane.metrics import MetricsCollector, MetricsFlusher

    collector = MetricsCollector(source="test")
    key = (ACCOUNT_ID, "ep", "AllTraffic")
    for i in range(10):
        collector.invocation(key, outcome="5xx" if i < 2 else "ok", instances=2, total_us=1500.0, model_us=1000.0)
    asyncio.run(MetricsFlusher(collector, session_factory, interval=10).flush())
    sagemaker = cw.list_metrics(Namespace="AWS/SageMaker")["Metrics"]
    assert {m["MetricName"] for m in sagemaker} == {
        "Invocations",
        "InvocationsPerInstance",
        "Invocation4XXErrors",
        "Invocation5XXErrors",
        "ModelLatency",
        "OverheadLatency",
    }
    dims = [{"Name": "EndpointName", "Value": "ep"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    assert all(m["Dimensions"] == dims for m in sagemaker)
    now = _now()
    window = {"StartTime": now - dt.timedelta(minutes=2), "EndTime": now + dt.timedelta(minutes=1)}

    def stat(metric: str, name: str) -> float:
        (point,) = cw.get_metric_statistics(
            Namespace="AWS/SageMaker", MetricName=metric, Dimensions=dims, Period=60, Statistics=[name], **window
        )["Datapoints"]
        return float(point[name])

    assert stat("Invocations", "Sum") == 10 and stat("InvocationsPerInstance", "Sum") == 5
    assert stat("Invocation5XXErrors", "Average") == pytest.approx(0.2)
    assert stat("ModelLatency", "Average") == 1000 and stat("OverheadLatency", "Maximum") == 500


def test_retention_rolls_high_resolution_data_into_minutes(cw, db):
    from neurondock_platform.services import metrics

    start = _now().replace(second=0, microsecond=0) - dt.timedelta(hours=4)
    cw.put_metric_data(
        Namespace="App",
        MetricData=[
            {
                "MetricName": "Fine",
                "Value": float(i),
                "StorageResolution": 1,
                "Timestamp": start + dt.timedelta(seconds=10 * i),
            }
            for i in range(12)
        ],
    )
    query = {"Namespace": "App", "MetricName": "Fine", "StartTime": start, "EndTime": start + dt.timedelta(minutes=2)}
    assert len(cw.get_metric_statistics(Period=10, Statistics=["Sum"], **query)["Datapoints"]) == 12
    done = db(lambda session: metrics.retain(session, _now()))
    assert done["rolled_into_60"] == 12
    assert cw.get_metric_statistics(Period=10, Statistics=["Sum"], **query)["Datapoints"] == []
    minutes = sorted(
        cw.get_metric_statistics(Period=60, Statistics=["Sum", "SampleCount"], **query)["Datapoints"],
        key=lambda p: p["Timestamp"],
    )
    assert [(p["Sum"], p["SampleCount"]) for p in minutes] == [(15.0, 6.0), (51.0, 6.0)]
    percentile = cw.get_metric_statistics(Period=60, ExtendedStatistics=["p100"], **query)["Datapoints"]
    assert sorted(p["ExtendedStatistics"]["p100"] for p in percentile) == [pytest.approx(5), pytest.approx(11)]


def test_another_account_sees_no_metrics(cw, clients, other):
    cw.put_metric_data(Namespace="Secret", MetricData=[{"MetricName": "Revenue", "Value": 1e6}])
    theirs = clients("cloudwatch", access_key=other["access_key"], secret_key=other["secret_key"])
    assert theirs.list_metrics()["Metrics"] == []
    now = _now()
    assert (
        theirs.get_metric_statistics(
            Namespace="Secret",
            MetricName="Revenue",
            StartTime=now - dt.timedelta(minutes=5),
            EndTime=now,
            Period=60,
            Statistics=["Sum"],
        )["Datapoints"]
        == []
    )
    (result,) = theirs.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "r",
                "MetricStat": {"Metric": {"Namespace": "Secret", "MetricName": "Revenue"}, "Period": 60, "Stat": "Sum"},
            }
        ],
        StartTime=now - dt.timedelta(minutes=5),
        EndTime=now + dt.timedelta(minutes=1),
    )["MetricDataResults"]
    assert result["Values"] == []
    # Naming the owner's account id does not reach its data either.
    (result,) = theirs.get_metric_data(
        MetricDataQueries=[
            {
                "Id": "r",
                "AccountId": "123456789012",
                "MetricStat": {"Metric": {"Namespace": "Secret", "MetricName": "Revenue"}, "Period": 60, "Stat": "Sum"},
            }
        ],
        StartTime=now - dt.timedelta(minutes=5),
        EndTime=now + dt.timedelta(minutes=1),
    )["MetricDataResults"]
    assert result["Values"] == [] and result["StatusCode"] == "Forbidden"
    assert theirs.list_metrics(OwningAccount="123456789012")["Metrics"] == []
