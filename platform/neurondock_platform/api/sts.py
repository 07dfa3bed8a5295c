"""STS GetCallerIdentity (query protocol), so SDKs can learn the account behind their keys."""

from __future__ import annotations

import uuid
from xml.sax.saxutils import escape

from flask import Response, request

from neurondock_platform.api import context
from neurondock_platform.errors import PlatformError

NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"


def _xml(body: str, status: int = 200) -> Response:
    return Response(f'<?xml version="1.0" encoding="UTF-8"?>\n{body}', status=status, content_type="text/xml")


def error_response(err: PlatformError) -> Response:
    """Render an error in the query protocol's XML envelope."""
    return _xml(
        f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>Sender</Type><Code>{escape(err.code)}</Code>'
        f"<Message>{escape(err.message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>",
        status=err.http_status,
    )


def handle() -> Response:
    """Answer one STS query-protocol request for the already authenticated caller."""
    action = request.form.get("Action") or request.args.get("Action", "")
    if action != "GetCallerIdentity":
        return error_response(
            PlatformError(f"neurondock's STS answers GetCallerIdentity only, not {action or 'an empty Action'}.")
        )
    auth = context.auth()
    return _xml(
        f'<GetCallerIdentityResponse xmlns="{NAMESPACE}"><GetCallerIdentityResult>'
        f"<Arn>arn:aws:iam::{auth.account_id}:root</Arn><UserId>{escape(auth.access_key_id)}</UserId>"
        f"<Account>{auth.account_id}</Account></GetCallerIdentityResult>"
        f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
    )
