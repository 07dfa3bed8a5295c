"""Run ceph's s3-tests against a live ``neurondock up`` and count the results by category.

    python -m tests.conformance.run_s3_tests --s3-tests <s3-tests checkout> --python <its venv>/bin/python

``--s3-tests`` is a checkout of https://github.com/ceph/s3-tests (never committed here) and ``--python``
an interpreter with its requirements installed (a virtualenv of its own, not the project's). The harness
starts the platform on a loopback port with a fresh data directory, creates the three accounts the suite
needs (main, alt, tenant) with ``neurondock accounts create``, writes the suite's config file, and runs
``s3tests/functional/test_s3.py`` and ``test_headers.py`` with a plugin (``s3tests_plugin``) that adds the
store's ``/s3`` path prefix to every client. It prints, per group, how many tests passed, failed, failed
with ``NotImplemented`` (a feature the store refuses instead of ignoring), errored or were skipped, and
writes every result to ``--out``. It takes about ten minutes, so it is not part of the default test run.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests.support.platform import Platform

HERE = Path(__file__).resolve().parent

# s3-tests markers of features the store does not implement (docs/s3.md): these tests are expected to
# meet NotImplemented, never a silent success.
FEATURE_MARKERS = {
    "abac_test", "appendobject", "auth_aws2", "bucket_encryption", "bucket_logging", "bucket_logging_cleanup",
    "bucket_policy", "cloud_restore", "cloud_transition", "delete_marker", "encryption", "group",
    "group_policy", "iam_account", "iam_cross_account", "iam_role", "iam_tenant", "iam_user", "lifecycle",
    "lifecycle_expiration", "lifecycle_transition", "object_lock", "object_ownership", "role_policy",
    "s3select", "s3website", "s3website_redirect_location", "s3website_routing_rules", "session_policy",
    "sns", "sse_s3", "storage_class", "test_of_sts", "user_policy", "versioning", "webidentity_test",
    "fails_with_subdomain",
}  # fmt: skip
# Features that are not an s3-tests marker but that a test's name gives away.
FEATURE_WORDS = (
    "acl", "policy", "cors", "versioning", "version", "encryption", "sse", "lifecycle", "logging", "website",
    "object_lock", "retention", "legal_hold", "torrent", "public_block", "ownership", "bucket_tagging",
    "set_bucket_tagging", "post_object", "restore", "select", "notification", "accelerate", "payment",
    "replication", "inventory", "analytics", "metrics", "storage_class", "append", "anonymous", "cloud",
)  # fmt: skip


def _group(name: str, markers: list[str]) -> str:
    """The core area a test belongs to (object, bucket, multipart, listing) or the feature it needs."""
    if "fails_on_aws" in markers:
        return "ceph-only (fails_on_aws)"
    feature = sorted(set(markers) & FEATURE_MARKERS)
    if feature:
        return f"feature:{feature[0]}"
    lowered = name.lower()
    word = next((w for w in FEATURE_WORDS if w in lowered), None)
    if word is not None:
        return f"feature:{word}"
    if "multipart" in lowered:
        return "core:multipart"
    if "list" in lowered or "prefix" in lowered or "delimiter" in lowered or "marker" in lowered:
        return "core:listing"
    if "bucket" in lowered and "object" not in lowered:
        return "core:bucket"
    return "core:object"


_REFUSED = re.compile(r"\(NotImplemented\) when calling the (\w+) operation: ([^\n]*)")


def _markers(entry: dict[str, object]) -> list[str]:
    markers = entry.get("markers")
    return [str(m) for m in markers] if isinstance(markers, list) else []


def _outcome(entry: dict[str, object]) -> str:
    outcome = str(entry["outcome"])
    detail = str(entry.get("detail", ""))
    # botocore names the code; the suite's raw requests (requests, http.client) only see the status.
    markers = ("(NotImplemented)", "'NotImplemented'", "assert 501 ==")
    if outcome in ("failed", "error") and any(m in detail for m in markers):
        return "NotImplemented"
    return outcome


def refused(entry: dict[str, object]) -> str:
    """What a NotImplemented answer refused: the header it names, else the operation."""
    match = _REFUSED.search(str(entry.get("detail", "")))
    if match is None:
        return "(a raw request answered 501)"
    operation, message = match.groups()
    header = message.rpartition("not implemented: ")[2] if "not implemented: " in message else ""
    return f"{operation} ({header})" if header else operation


def _create_accounts(platform: Platform) -> dict[str, dict[str, dict[str, str]]]:
    env = platform.cli_env()
    accounts = {}
    for name in ("main", "alt", "tenant"):
        out = subprocess.run(
            [sys.executable, "-m", "neurondock_platform.cli", "accounts", "create", f"s3tests-{name}", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        accounts[name] = json.loads(out.stdout)
    return accounts


def _config(platform: Platform, accounts: dict[str, dict[str, dict[str, str]]]) -> str:
    sections = [
        textwrap.dedent(
            f"""\
            [DEFAULT]
            host = 127.0.0.1
            port = {platform.port}
            is_secure = False
            ssl_verify = False

            [fixtures]
            bucket prefix = s3t-{{random}}-
            """
        )
    ]
    for name in ("main", "alt", "tenant"):
        account_id, key = accounts[name]["account"]["id"], accounts[name]["access_key"]
        sections.append(
            textwrap.dedent(
                f"""\
                [s3 {name}]
                display_name = {account_id}
                user_id = {account_id}
                email = {name}@example.com
                access_key = {key["access_key_id"]}
                secret_key = {key["secret_access_key"]}
                api_name = eu-west-1
                tenant = {name}
                """
            )
        )
    # IAM sections the suite's configure() reads even when no IAM test runs (they are NotImplemented here).
    for section in ("iam", "iam root", "iam alt root"):
        sections.append(
            f"[{section}]\nemail = iam@example.com\nuser_id = iam\naccess_key = AKIAUNUSED\n"
            "secret_key = unused\ndisplay_name = iam\n"
        )
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--s3-tests", type=Path, required=True, help="checkout of ceph/s3-tests")
    parser.add_argument("--python", default=sys.executable, help="interpreter with s3-tests' requirements")
    parser.add_argument("--out", type=Path, default=Path("s3-tests-results.json"))
    parser.add_argument("--report-only", action="store_true", help="only summarise an earlier run's --out")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for s3-tests' pytest (e.g. -k multipart)")
    args = parser.parse_args(argv)
    if not args.report_only:
        _run(args)
    _report(json.loads(args.out.read_text()))
    return 0


def _run(args: argparse.Namespace) -> None:

    with tempfile.TemporaryDirectory(prefix="nd-s3tests-") as tmp:
        platform = Platform(Path(tmp) / "nd")
        platform.start()
        try:
            conf = Path(tmp) / "s3tests.conf"
            conf.write_text(_config(platform, _create_accounts(platform)))
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "NEURONDOCK_"))},
                "S3TEST_CONF": str(conf),
                "S3TEST_PATH_PREFIX": "/s3",
                "S3TEST_RESULTS": str(args.out.resolve()),
                "PYTHONPATH": str(HERE),
            }
            tests = ["s3tests/functional/test_s3.py", "s3tests/functional/test_headers.py"]
            subprocess.run(
                [args.python, "-m", "pytest", "-q", "-p", "s3tests_plugin", "-p", "no:cacheprovider",
                 *tests, *args.pytest_args],
                cwd=args.s3_tests,
                env=env,
                check=False,
            )  # fmt: skip
        finally:
            platform.stop()


def _report(results: dict[str, dict[str, object]]) -> None:
    table: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for entry in results.values():
        table[_group(str(entry["name"]), _markers(entry))][_outcome(entry)] += 1
    columns = ["passed", "failed", "NotImplemented", "error", "skipped"]
    print(f"\n{'group':40s}" + "".join(f"{c:>16s}" for c in columns))
    totals: collections.Counter[str] = collections.Counter()
    for group in sorted(table):
        totals.update(table[group])
        print(f"{group:40s}" + "".join(f"{table[group][c]:16d}" for c in columns))
    print(f"{'total':40s}" + "".join(f"{totals[c]:16d}" for c in columns))
    by_refusal = collections.Counter(refused(e) for e in results.values() if _outcome(e) == "NotImplemented")
    print("\nNotImplemented answers, by what was refused:")
    for what, count in by_refusal.most_common():
        print(f"  {count:4d}  {what}")
    print("\nCore tests that failed:")
    for entry in sorted(results.values(), key=lambda e: str(e["name"])):
        group = _group(str(entry["name"]), _markers(entry))
        if group.startswith("core") and _outcome(entry) in ("failed", "error"):
            lines = [line[2:].strip() for line in str(entry.get("detail", "")).splitlines() if line.startswith("E ")]
            print(f"  {group:16s} {entry['name']}: {(lines or ['?'])[0][:110]}")


if __name__ == "__main__":
    raise SystemExit(main())
