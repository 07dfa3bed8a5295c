"""UpdateEndpoint (blue/green, with rollback) and UpdateEndpointWeightsAndCapacities, live."""

from __future__ import annotations

import json
import threading
import uuid

from tests.e2e.test_walking_skeleton import PYTORCH_IMAGE, WAIT, deploy
from tests.support.torch_models import pack_model, tiny_mlp
from tests.support.waiting import wait_for

BODY = json.dumps([[1.0] * 16])


def _invoke(rt, name):
    return json.loads(rt.invoke_endpoint(EndpointName=name, ContentType="application/json", Body=BODY)["Body"].read())


def _model_and_config(sm, s3, bucket, tmp_path, name, scripted=None, code=None, count=1):
    key = f"{name}/model.tar.gz"
    s3.upload_file(str(pack_model(tmp_path / f"{name}.tar.gz", scripted, code=code)), bucket, key)
    sm.create_model(ModelName=name, PrimaryContainer={"Image": PYTORCH_IMAGE, "ModelDataUrl": f"s3://{bucket}/{key}"})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": count,
                "InstanceType": "ml.c5.large",
            }
        ],
    )


class Hammer:
    """Invoke continuously in a thread, counting failures, until stopped."""

    def __init__(self, rt, name):
        self.rt, self.name = rt, name
        self.ok, self.errors = 0, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            try:
                _invoke(self.rt, self.name)
                self.ok += 1
            except Exception as exc:
                self.errors.append(repr(exc))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


def test_update_endpoint_swaps_models_without_failed_invocations(platform, sm, rt, s3, bucket, tmp_path):
    old, new = tiny_mlp(seed=11), tiny_mlp(seed=12)
    name = deploy(sm, s3, bucket, tmp_path, old)
    before = _invoke(rt, name)
    cfg = f"cfg-{uuid.uuid4().hex[:8]}"
    _model_and_config(sm, s3, bucket, tmp_path, cfg, new, count=2)
    with Hammer(rt, name) as hammer:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg)
        assert sm.describe_endpoint(EndpointName=name)["EndpointStatus"] in ("Updating", "InService")
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    desc = sm.describe_endpoint(EndpointName=name)
    assert desc["EndpointConfigName"] == cfg and "FailureReason" not in desc
    assert desc["ProductionVariants"][0]["CurrentInstanceCount"] == 2
    after = _invoke(rt, name)
    assert after != before
    assert hammer.errors == [] and hammer.ok > 0
    sm.delete_endpoint(EndpointName=name)


def test_failed_update_rolls_back_and_keeps_serving(platform, sm, rt, s3, bucket, tmp_path):
    model = tiny_mlp(seed=21)
    name = deploy(sm, s3, bucket, tmp_path, model)
    before = _invoke(rt, name)
    cfg = f"bad-{uuid.uuid4().hex[:8]}"
    broken = {"inference.py": "def model_fn(model_dir):\n    raise RuntimeError('new weights are broken')\n"}
    _model_and_config(sm, s3, bucket, tmp_path, cfg, None, code=broken)
    with Hammer(rt, name) as hammer:
        sm.update_endpoint(EndpointName=name, EndpointConfigName=cfg)
        desc = wait_for(
            lambda: (
                (d := sm.describe_endpoint(EndpointName=name))["EndpointStatus"] == "InService"
                and d.get("FailureReason")
                and d
            ),
            120,
            what="the failed update to roll back",
            interval=0.1,
            state=lambda: sm.describe_endpoint(EndpointName=name),
        )
    assert "new weights are broken" in desc["FailureReason"]
    assert desc["EndpointConfigName"] != cfg
    assert _invoke(rt, name) == before
    assert hammer.errors == []
    sm.delete_endpoint(EndpointName=name)


def test_update_weights_and_capacities_scales_out(platform, sm, rt, s3, bucket, tmp_path):
    name = deploy(sm, s3, bucket, tmp_path, tiny_mlp(seed=31))
    with Hammer(rt, name) as hammer:
        sm.update_endpoint_weights_and_capacities(
            EndpointName=name, DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 3}]
        )
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    variant = sm.describe_endpoint(EndpointName=name)["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == variant["DesiredInstanceCount"] == 3
    assert hammer.errors == []
    sm.delete_endpoint(EndpointName=name)
