"""STS AssumeRole with boto3: temporary keys of the caller's own account, accepted everywhere keys are checked.

The role is always assumed within the caller's account, whatever account id its ARN names (scripts
carry their AWS account id in role ARNs); the credentials can never reach another account's data.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from tests.support.identity import Keys, assume, error_code

pytestmark = pytest.mark.parametrize("engine", ["sqlite"], indirect=True)

# An AWS account id that is nobody's here: the role is still the caller's own.
FOREIGN_ROLE = "arn:aws:iam::111122223333:role/service-role/AmazonSageMaker-ExecutionRole"
IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1.0-cpu-py310"


def test_assume_role_at_sts_and_at_the_root_issues_temporary_keys_of_the_callers_account(live_front, ordinary):
    for url in (live_front.url + "/sts", live_front.url):
        import boto3

        sts = boto3.session.Session().client(
            "sts",
            endpoint_url=url,
            region_name="us-east-1",
            aws_access_key_id=ordinary.access_key_id,
            aws_secret_access_key=ordinary.secret_access_key,
        )
        before = dt.datetime.now(dt.UTC)
        got = sts.assume_role(RoleArn=FOREIGN_ROLE, RoleSessionName="nightly-job", DurationSeconds=1800)
        creds = got["Credentials"]
        assert creds["AccessKeyId"].startswith("ASIA") and len(creds["AccessKeyId"]) == 20
        assert creds["SecretAccessKey"] and len(creds["SessionToken"]) > 100
        lifetime = (creds["Expiration"] - before).total_seconds()
        assert 1790 <= lifetime <= 1805, lifetime
        user = got["AssumedRoleUser"]
        # The owner's account, never the one the ARN names.
        assert (
            user["Arn"] == f"arn:aws:sts::{ordinary.account_id}:assumed-role/AmazonSageMaker-ExecutionRole/nightly-job"
        )
        assert user["AssumedRoleId"].startswith("AROA") and user["AssumedRoleId"].endswith(":nightly-job")

        temp = Keys(ordinary.account_id, creds["AccessKeyId"], creds["SecretAccessKey"], creds["SessionToken"])
        who = live_front.client("sts", temp).get_caller_identity()
        assert (who["Account"], who["Arn"], who["UserId"]) == (
            ordinary.account_id,
            user["Arn"],
            user["AssumedRoleId"],
        )


def test_temporary_keys_work_everywhere_keys_are_checked(live_front, ordinary):
    temp = assume(live_front, ordinary, FOREIGN_ROLE)
    sm = live_front.client("sagemaker", temp)
    sm.create_model(
        ModelName="made-with-temporary-keys",
        PrimaryContainer={"Image": IMAGE, "ModelDataUrl": "s3://b/m.tar.gz"},
        ExecutionRoleArn=FOREIGN_ROLE,
    )
    # The model is the account's: its long-term keys see it, with the role ARN as given.
    described = live_front.client("sagemaker", ordinary).describe_model(ModelName="made-with-temporary-keys")
    assert described["ExecutionRoleArn"] == FOREIGN_ROLE
    assert f":{ordinary.account_id}:" in described["ModelArn"]

    s3 = live_front.client("s3", temp)
    s3.create_bucket(Bucket="temp-keys-bucket")
    s3.put_object(Bucket="temp-keys-bucket", Key="k", Body=b"written with temporary keys")
    assert s3.get_object(Bucket="temp-keys-bucket", Key="k")["Body"].read() == b"written with temporary keys"
    # A presigned URL carries the token in its query (SigV4 and the legacy form alike).
    for version in ("s3v4", "s3"):
        presigner = live_front.client("s3", temp, signature_version=version)
        url = presigner.generate_presigned_url("get_object", Params={"Bucket": "temp-keys-bucket", "Key": "k"})
        assert "ecurity-" in url  # X-Amz-Security-Token / x-amz-security-token
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.read() == b"written with temporary keys"

    # The runtime verified the keys: the answer is about the endpoint, not the signature.
    runtime = live_front.client("sagemaker-runtime", temp)
    with pytest.raises(ClientError) as caught:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"{}", ContentType="application/json")
    assert error_code(caught) == "ValidationError" and "not found" in str(caught.value)


def test_temporary_keys_never_reach_another_account(live_front, root_keys, ordinary):
    admin_s3 = live_front.client("s3", root_keys)
    admin_s3.create_bucket(Bucket="admins-bucket")
    admin_s3.put_object(Bucket="admins-bucket", Key="secret", Body=b"admin only")
    # Naming the admin's account id in the role ARN changes nothing: the keys are the ordinary account's.
    temp = assume(live_front, ordinary, f"arn:aws:iam::{root_keys.account_id}:role/Admin")
    with pytest.raises(ClientError) as caught:
        live_front.client("s3", temp).get_object(Bucket="admins-bucket", Key="secret")
    assert error_code(caught) == "AccessDenied"
    assert live_front.client("sts", temp).get_caller_identity()["Account"] == ordinary.account_id


def test_a_wrong_or_expired_token_is_refused_with_each_protocols_code(live_front, ordinary):
    temp = assume(live_front, ordinary, FOREIGN_ROLE)
    wrong = Keys(temp.account_id, temp.access_key_id, temp.secret_access_key, "not-the-session-token")
    no_token = Keys(temp.account_id, temp.access_key_id, temp.secret_access_key)
    calls = {
        "sagemaker": lambda c: c.list_models(),
        "sts": lambda c: c.get_caller_identity(),
        "s3": lambda c: c.list_buckets(),
    }
    invalid = {"sagemaker": "UnrecognizedClientException", "sts": "InvalidClientTokenId", "s3": "InvalidToken"}
    missing = {"sagemaker": "UnrecognizedClientException", "sts": "InvalidClientTokenId", "s3": "InvalidAccessKeyId"}
    expired = {"sagemaker": "ExpiredTokenException", "sts": "ExpiredToken", "s3": "ExpiredToken"}
    for service, call in calls.items():
        call(live_front.client(service, temp))
        for keys, codes in ((wrong, invalid), (no_token, missing)):
            with pytest.raises(ClientError) as caught:
                call(live_front.client(service, keys))
            assert error_code(caught) == codes[service], (service, keys)
    # An hour and a minute later (the default session lasts an hour), on the server's and the signer's clocks.
    later = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=3660)
    verifier = live_front.flask_app.extensions["neurondock_verifier"]
    verifier.clock = lambda: time.time() + 3660
    try:
        with mock.patch("botocore.auth.get_current_datetime", return_value=later):
            for service, call in calls.items():
                with pytest.raises(ClientError) as caught:
                    call(live_front.client(service, temp))
                assert error_code(caught) == expired[service], service
    finally:
        verifier.clock = time.time


def test_duration_seconds_is_validated_as_aws_does(live_front, ordinary):
    sts = live_front.client("sts", ordinary, parameter_validation=False)
    for duration, message in ((899, "greater than or equal to 900"), (43201, "less than or equal to 43200")):
        with pytest.raises(ClientError) as caught:
            sts.assume_role(RoleArn=FOREIGN_ROLE, RoleSessionName="s1", DurationSeconds=duration)
        assert error_code(caught) == "ValidationError" and message in str(caught.value)
    twelve_hours = sts.assume_role(RoleArn=FOREIGN_ROLE, RoleSessionName="s1", DurationSeconds=43200)
    assert twelve_hours["Credentials"]["Expiration"] > dt.datetime.now(dt.UTC) + dt.timedelta(hours=11.9)
    # Role chaining (temporary keys assuming a role) is capped at an hour.
    temp = assume(live_front, ordinary, FOREIGN_ROLE)
    with pytest.raises(ClientError) as caught:
        live_front.client("sts", temp).assume_role(RoleArn=FOREIGN_ROLE, RoleSessionName="s2", DurationSeconds=7200)
    assert error_code(caught) == "ValidationError" and "role chaining" in str(caught.value)
    chained = live_front.client("sts", temp).assume_role(RoleArn=FOREIGN_ROLE, RoleSessionName="s2")
    assert chained["AssumedRoleUser"]["Arn"].startswith(f"arn:aws:sts::{ordinary.account_id}:assumed-role/")
    for bad in ({"RoleArn": "arn:aws:iam::12345:role/x"}, {"RoleSessionName": "a b"}):
        params = {"RoleArn": FOREIGN_ROLE, "RoleSessionName": "s3", **bad}
        with pytest.raises(ClientError) as caught:
            sts.assume_role(**params)
        assert error_code(caught) == "ValidationError"


def test_what_is_not_implemented_says_so(live_front, ordinary):
    sts = live_front.client("sts", ordinary)
    with pytest.raises(ClientError) as caught:
        sts.assume_role(RoleArn=FOREIGN_ROLE, RoleSessionName="s1", Policy='{"Version": "2012-10-17"}')
    assert error_code(caught) == "NotImplemented" and "session policies" in str(caught.value)
    with pytest.raises(ClientError) as caught:
        sts.get_session_token()
    assert error_code(caught) == "InvalidAction"


def test_temporary_keys_neither_sign_in_nor_issue_tokens(live_front, ordinary):
    import json
    import urllib.error

    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    temp = assume(live_front, ordinary, FOREIGN_ROLE)
    url = live_front.url + "/api/v1/tokens"
    pair = json.dumps({"access_key_id": temp.access_key_id, "secret_access_key": temp.secret_access_key}).encode()
    signed = AWSRequest(method="POST", url=url, data=b"{}", headers={"Content-Type": "application/json"})
    creds = Credentials(temp.access_key_id, temp.secret_access_key, temp.session_token)
    SigV4Auth(creds, "neurondock", "us-east-1").add_auth(signed)
    attempts = [
        (urllib.request.Request(url, data=pair, headers={"Content-Type": "application/json"}), 401),
        (urllib.request.Request(url, data=b"{}", headers=dict(signed.headers.items())), 403),
    ]
    for req, status in attempts:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(req, timeout=10)
        assert caught.value.code == status
    # The same SigV4 signature is good for the admin API's other routes.
    whoami = AWSRequest(method="GET", url=live_front.url + "/api/v1/whoami")
    SigV4Auth(creds, "neurondock", "us-east-1").add_auth(whoami)
    req = urllib.request.Request(whoami.url, headers=dict(whoami.headers.items()))
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read())["account_id"] == ordinary.account_id
