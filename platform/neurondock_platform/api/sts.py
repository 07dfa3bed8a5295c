"""STS over the query protocol: GetCallerIdentity and AssumeRole (docs/sts.md).

Served at ``/sts`` and at ``POST /`` for requests signed for service ``sts``. AssumeRole always
assumes the role within the caller's own account (``services/sts.py``).
"""

from __future__ import annotations

import uuid
from xml.sax.saxutils import escape

from flask import Response, request

from neurondock_platform.api import context
from neurondock_platform.errors import PlatformError
from neurondock_platform.services import sts as sts_service

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
# STS's own codes for what the verifier raises (docs/sigv4.md).
_CODES = {
    "UnrecognizedClientException": "InvalidClientTokenId",
    "InvalidSignatureException": "SignatureDoesNotMatch",
    "ExpiredTokenException": "ExpiredToken",
    "IncompleteSignatureException": "IncompleteSignature",
    "MissingAuthenticationTokenException": "MissingAuthenticationToken",
}
# AssumeRole parameters that would narrow or condition the session; without them honoured, refuse them.
_NOT_IMPLEMENTED = {
    "Policy": "session policies",
    "PolicyArns": "managed session policies",
    "Tags": "session tags",
    "TransitiveTagKeys": "transitive session tags",
    "SerialNumber": "MFA",
    "TokenCode": "MFA",
    "ProvidedContexts": "provided contexts",
}


class InvalidAction(PlatformError):
    code = "InvalidAction"
    http_status = 400
    fmt = "Could not find operation {action} for version 2011-06-15; neurondock's STS answers {supported}."


def _xml(body: str, status: int = 200) -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}', status=status, content_type="text/xml")


def _metadata() -> str:
    return f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"


def error_response(err: PlatformError) -> Response:
    """Render an error in the query protocol's XML envelope."""
    code = _CODES.get(err.code, err.code)
    return _xml(
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>{escape(code)}</Code>'
        f"<Message>{escape(err.message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>",
        status=err.http_status,
    )


def _param(name: str) -> str | None:
    return request.form.get(name) if name in request.form else request.args.get(name)


def _required(name: str) -> str:
    value = _param(name)
    if not value:
        raise sts_service.StsValidationError(
            f"1 validation error detected: Value null at '{name[0].lower()}{name[1:]}' failed to satisfy "
            "constraint: Member must not be null"
        )
    return value


def get_caller_identity() -> Response:
    """The account behind the caller's keys; an assumed-role ARN for temporary credentials."""
    auth = context.auth()
    if auth.arn:
        arn, user_id = auth.arn, sts_service.caller_user_id(auth.account_id, auth.arn)
    else:
        arn, user_id = f"arn:aws:iam::{auth.account_id}:root", auth.access_key_id
    return _xml(
        f'<GetCallerIdentityResponse xmlns="{NAMESPACE}"><GetCallerIdentityResult>'
        f"<Arn>{escape(arn)}</Arn><UserId>{escape(user_id)}</UserId>"
        f"<Account>{auth.account_id}</Account></GetCallerIdentityResult>{_metadata()}</GetCallerIdentityResponse>"
    )


def assume_role() -> Response:
    """Issue temporary credentials of the caller's account for the role the request names."""
    names = {key.split(".", 1)[0] for key in [*request.form.keys(), *request.args.keys()]}
    for name in sorted(names & _NOT_IMPLEMENTED.keys()):
        raise sts_service.StsNotImplemented(
            f"AssumeRole parameter {name} ({_NOT_IMPLEMENTED[name]}) is not implemented by neurondock's STS."
        )
    role_arn, session_name = _required("RoleArn"), _required("RoleSessionName")
    duration_text = _param("DurationSeconds")
    duration: int | None = None
    if duration_text is not None:
        if not duration_text.strip().lstrip("-").isdigit():
            raise sts_service.StsValidationError(f"Value '{duration_text[:32]}' for DurationSeconds is not an integer.")
        duration = int(duration_text)
    source_identity = _param("SourceIdentity")
    auth = context.auth()
    session = context.db()
    source_key = sts_service.source_key_of(session, auth.access_key_id) if auth.temporary else auth.access_key_id
    issued = sts_service.assume_role(
        session,
        account_id=auth.account_id,
        role_arn=role_arn,
        role_session_name=session_name,
        duration_seconds=duration,
        source_access_key_id=source_key,
        chained=auth.temporary,
        max_session_seconds=context.settings().sts_max_session_seconds,
    )
    session.commit()
    expiration = issued.expiration.strftime("%Y-%m-%dT%H:%M:%SZ")
    source = f"<SourceIdentity>{escape(source_identity)}</SourceIdentity>" if source_identity else ""
    return _xml(
        f'<AssumeRoleResponse xmlns="{NAMESPACE}"><AssumeRoleResult>{source}'
        f"<AssumedRoleUser><Arn>{escape(issued.assumed_role_arn)}</Arn>"
        f"<AssumedRoleId>{escape(issued.assumed_role_id)}</AssumedRoleId></AssumedRoleUser>"
        f"<Credentials><AccessKeyId>{issued.access_key_id}</AccessKeyId>"
        f"<SecretAccessKey>{escape(issued.secret_access_key)}</SecretAccessKey>"
        f"<SessionToken>{escape(issued.session_token)}</SessionToken><Expiration>{expiration}</Expiration>"
        f"</Credentials><PackedPolicySize>0</PackedPolicySize></AssumeRoleResult>{_metadata()}</AssumeRoleResponse>"
    )


ACTIONS = {"GetCallerIdentity": get_caller_identity, "AssumeRole": assume_role}


def handle() -> Response:
    """Answer one STS query-protocol request for the already authenticated caller."""
    action = _param("Action") or ""
    handler = ACTIONS.get(action)
    try:
        if handler is None:
            raise InvalidAction(action=action[:64] or "(none)", supported=" and ".join(sorted(ACTIONS)))
        return handler()
    except PlatformError as err:
        return error_response(err)
