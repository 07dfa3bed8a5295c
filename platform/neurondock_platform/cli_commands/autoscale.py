"""``neurondock endpoints autoscale|scaling``: target tracking for a variant in one command, and its state.

``autoscale`` is RegisterScalableTarget plus a target tracking PutScalingPolicy on
SageMakerVariantInvocationsPerInstance (what AWS's guide walks through with boto3); ``--off`` deletes
the policy and deregisters. ``scaling`` shows the target, its policies with their alarms' states, and
the newest scaling activities. Everything goes through Application Auto Scaling and CloudWatch with
boto3, so the same commands would work against AWS.
"""

from __future__ import annotations

from typing import Any

import click

from neurondock_platform.cli_commands._client import CliError, Connection, NotFound, boto_error
from neurondock_platform.cli_commands._output import connection_options, emit_json, facts, table
from neurondock_platform.cli_commands.resources import endpoints

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
POLICY = "SageMakerVariantInvocationsPerInstance"


def _short(alarm: str) -> str:
    # Target tracking's own alarms are long (ResourceId and a UUID): their role says enough.
    return next((role for role in ("AlarmHigh", "AlarmLow") if f"-{role}-" in alarm), alarm)


def _target(name: str, variant: str) -> dict[str, str]:
    return {
        "ServiceNamespace": NAMESPACE,
        "ResourceId": f"endpoint/{name}/variant/{variant}",
        "ScalableDimension": DIMENSION,
    }


@endpoints.command("autoscale")
@click.argument("name")
@click.option("--variant", default="AllTraffic", show_default=True, help="The production variant to scale.")
@click.option("--min", "minimum", type=click.IntRange(1), default=1, show_default=True, help="Fewest instances.")
@click.option("--max", "maximum", type=click.IntRange(1), default=None, help="Most instances (required to turn on).")
@click.option(
    "--target",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Invocations per instance per minute to keep each instance at (required to turn on).",
)
@click.option("--scale-out-cooldown", type=click.IntRange(0), default=None, help="Seconds (AWS's default: 300).")
@click.option("--scale-in-cooldown", type=click.IntRange(0), default=None, help="Seconds (AWS's default: 300).")
@click.option("--disable-scale-in", is_flag=True, help="Only ever add instances.")
@click.option("--policy-name", default=POLICY, show_default=True, help="The scaling policy's name.")
@click.option("--off", is_flag=True, help="Delete the policy and deregister the variant instead.")
@connection_options
def autoscale(
    conn: Connection,
    output: str,
    name: str,
    variant: str,
    minimum: int,
    maximum: int | None,
    target: float | None,
    scale_out_cooldown: int | None,
    scale_in_cooldown: int | None,
    disable_scale_in: bool,
    policy_name: str,
    off: bool,
) -> None:
    """Keep NAME's variant at --target invocations per instance per minute, between --min and --max instances."""
    aas = conn.boto3_client("application-autoscaling")
    scope = _target(name, variant)
    try:
        if off:
            aas.deregister_scalable_target(**scope)
            if output == "json":
                emit_json({"ResourceId": scope["ResourceId"], "Deregistered": True})
            else:
                click.echo(f"Autoscaling is off for {scope['ResourceId']} (its policies and alarms are deleted).")
            return
        if maximum is None or target is None:
            raise click.UsageError("--max and --target are required to turn autoscaling on (or give --off).")
        if minimum > maximum:
            raise click.UsageError("--min cannot be more than --max.")
        aas.register_scalable_target(**scope, MinCapacity=minimum, MaxCapacity=maximum)
        config: dict[str, Any] = {
            "TargetValue": target,
            "PredefinedMetricSpecification": {"PredefinedMetricType": POLICY},
            "DisableScaleIn": disable_scale_in,
        }
        if scale_out_cooldown is not None:
            config["ScaleOutCooldown"] = scale_out_cooldown
        if scale_in_cooldown is not None:
            config["ScaleInCooldown"] = scale_in_cooldown
        policy = aas.put_scaling_policy(
            PolicyName=policy_name,
            **scope,
            PolicyType="TargetTrackingScaling",
            TargetTrackingScalingPolicyConfiguration=config,
        )
    except aas.exceptions.ObjectNotFoundException as exc:
        raise NotFound(exc.response["Error"]["Message"]) from exc
    except click.UsageError:
        raise
    except Exception as exc:
        raise boto_error(exc) from exc
    if output == "json":
        emit_json({"PolicyARN": policy["PolicyARN"], "Alarms": policy["Alarms"]})
        return
    click.echo(
        facts(
            [
                ("Scalable target", scope["ResourceId"]),
                ("Instances", f"{minimum} to {maximum}"),
                ("Target", f"{target:g} invocations per instance per minute"),
                ("Policy", policy["PolicyARN"]),
                ("Alarms", ", ".join(a["AlarmName"] for a in policy["Alarms"])),
            ]
        )
    )


@endpoints.command("scaling")
@click.argument("name")
@click.option("--variant", default="AllTraffic", show_default=True, help="The production variant.")
@click.option(
    "--activities",
    "limit",
    type=click.IntRange(1, 50),
    default=10,
    show_default=True,
    help="How many of the newest activities to show.",
)
@connection_options
def scaling(conn: Connection, output: str, name: str, variant: str, limit: int) -> None:
    """Show NAME's autoscaling: bounds, policies with their alarms' states, newest activities."""
    aas, cw = conn.boto3_client("application-autoscaling"), conn.boto3_client("cloudwatch")
    resource = f"endpoint/{name}/variant/{variant}"
    try:
        targets = aas.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=[resource])["ScalableTargets"]
        if not targets:
            raise NotFound(f"{resource} is not registered for autoscaling.")
        policies = aas.describe_scaling_policies(ServiceNamespace=NAMESPACE, ResourceId=resource)["ScalingPolicies"]
        names = [a["AlarmName"] for p in policies for a in p.get("Alarms", [])]
        states = (
            {a["AlarmName"]: a["StateValue"] for a in cw.describe_alarms(AlarmNames=names)["MetricAlarms"]}
            if names
            else {}
        )
        activities = aas.describe_scaling_activities(ServiceNamespace=NAMESPACE, ResourceId=resource, MaxResults=limit)[
            "ScalingActivities"
        ]
    except CliError:
        raise
    except Exception as exc:
        raise boto_error(exc) from exc
    if output == "json":
        emit_json(
            {
                "ScalableTarget": targets[0],
                "ScalingPolicies": policies,
                "AlarmStates": states,
                "ScalingActivities": activities,
            }
        )
        return
    target = targets[0]
    suspended = [k for k, v in (target.get("SuspendedState") or {}).items() if v]
    click.echo(
        facts(
            [
                ("Scalable target", resource),
                ("Instances", f"{target['MinCapacity']} to {target['MaxCapacity']}"),
                ("Suspended", ", ".join(suspended) or "nothing"),
            ]
        )
    )
    click.echo("\nPolicies")
    rows = []
    for policy in policies:
        config = policy.get("TargetTrackingScalingPolicyConfiguration") or policy.get("StepScalingPolicyConfiguration")
        goal = config.get("TargetValue", "-") if config else "-"
        alarms = ", ".join(
            f"{_short(a['AlarmName'])}={states.get(a['AlarmName'], '?')}" for a in policy.get("Alarms", [])
        )
        rows.append([policy["PolicyName"], policy["PolicyType"], goal, alarms or "-"])
    click.echo(table(["policy", "type", "target", "alarms"], rows) if rows else "  none")
    click.echo("\nActivities (newest first)")
    rows = [[a["StartTime"], a["StatusCode"], a["Description"], a["Cause"]] for a in activities]
    click.echo(table(["started", "status", "description", "cause"], rows) if rows else "  none")
