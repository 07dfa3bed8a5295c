"""The console's endpoint page shows autoscaling and alarms, and charts the instance count."""

from __future__ import annotations

import pytest
from tests.integration.admin.test_console_pages import sign_in
from tests.support.autoscaling import track_invocations, variant_target

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)


def test_endpoint_page_shows_targets_policies_alarms_and_activities(client, world, aas, cw):
    world("ep", instance_type="ml.c5.large")
    target = variant_target("ep")
    assert sign_in(client).status_code == 302
    assert "No variant is registered for autoscaling" in client.get("/console/endpoints/ep").get_data(as_text=True)
    aas.register_scalable_target(**target, MinCapacity=2, MaxCapacity=5)
    policy = track_invocations(aas, target, 70.0, name="invocations")
    cw.set_alarm_state(AlarmName=policy["Alarms"][0]["AlarmName"], StateValue="ALARM", StateReason="forced")
    text = client.get("/console/endpoints/ep").get_data(as_text=True)
    assert 'id="scalable-targets"' in text and "invocations" in text and "TargetTrackingScaling" in text
    for alarm in policy["Alarms"]:
        assert alarm["AlarmName"] in text
    assert "Alarm updated from INSUFFICIENT_DATA to ALARM" in text
    # The new minimum of 2 scaled the variant out at once: an activity.
    assert "Setting desired instance count to 2." in text and "minimum capacity was set to 2" in text
    assert 'data-metric="InstanceCount"' in text
    chart = client.get("/console/endpoints/ep/metrics.json?metric=InstanceCount&stat=Maximum").get_json()
    assert chart["available"] is True and chart["unit"] == "Count"
