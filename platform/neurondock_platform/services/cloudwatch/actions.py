"""What an alarm does when judged: its actions (docs/cloudwatch.md, "Alarm actions").

An Application Auto Scaling policy ARN is invoked at every evaluation while the alarm is in the
action's state, as CloudWatch does for Auto Scaling actions; any other action (SNS, EC2, Systems
Manager) runs only on a transition, and neurondock records in the alarm's history that it could not
execute it rather than dropping it silently.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from neurondock_platform.models import AlarmState, MetricAlarm
from neurondock_platform.services.cloudwatch import alarms
from neurondock_platform.services.cloudwatch.evaluation import Datapoint, Timing

POLICY_ARN_PREFIX = "arn:aws:autoscaling:"


def actions_for(alarm: MetricAlarm, state: AlarmState) -> list[str]:
    if state == AlarmState.ALARM:
        return list(alarm.alarm_actions)
    if state == AlarmState.OK:
        return list(alarm.ok_actions)
    return list(alarm.insufficient_data_actions)


def run(
    session: Session,
    alarm: MetricAlarm,
    *,
    transitioned: bool,
    newest: Datapoint | None,
    now: dt.datetime,
    timing: Timing,
) -> None:
    """Run the actions of the alarm's current state after a judgement or a SetAlarmState.

    ``newest`` is the newest datapoint the alarm judged (what a policy scales on), if any.
    """
    if not alarm.actions_enabled:
        return
    # Imported here: Application Auto Scaling creates alarms through this package.
    from neurondock_platform.services.autoscaling import scaling

    for arn in actions_for(alarm, alarm.state_value):
        if arn.startswith(POLICY_ARN_PREFIX) and ":scalingPolicy:" in arn:
            result = scaling.invoke_policy(session, arn, alarm, newest=newest, now=now, timing=timing)
            # Recorded when it starts something or on a transition, not at every re-invocation.
            if result.error is None and (result.acted or transitioned):
                alarms.record(
                    session,
                    alarm,
                    "Action",
                    f"Successfully executed action {arn}",
                    {
                        "actionState": "Succeeded",
                        "stateUpdateTimestamp": now,
                        "notificationResource": arn,
                        "publishedMessage": None,
                    },
                    now,
                )
            elif result.error is not None and transitioned:
                _failed(session, alarm, arn, result.error, now)
        elif transitioned:
            _failed(
                session,
                alarm,
                arn,
                "neurondock runs Application Auto Scaling policies only; it does not deliver SNS notifications "
                "or run EC2 and Systems Manager actions",
                now,
            )


def _failed(session: Session, alarm: MetricAlarm, arn: str, error: str, now: dt.datetime) -> None:
    alarms.record(
        session,
        alarm,
        "Action",
        f"Failed to execute action {arn}",
        {"actionState": "Failed", "stateUpdateTimestamp": now, "notificationResource": arn, "error": error},
        now,
    )
