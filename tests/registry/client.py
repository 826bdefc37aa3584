#!/usr/bin/env python3
"""Drives the host's Confluent-compatible Schema Registry API with the real
Confluent client (confluent_kafka.schema_registry.SchemaRegistryClient, pinned
in requirements.lock, installed by scripts/registry-tools.sh) and prints ONE
JSON line with everything it observed.

    python client.py <url> <token> <subject>

<url> is the host's HTTP address (e.g. http://127.0.0.1:8080), <token> the
bearer token that mutations need, <subject> an event type name that has no
schema registered yet (e.g. order.created).

Only the client's API is used, and its own auth options: with
bearer.auth.credentials.source=STATIC_TOKEN it sends
`Authorization: Bearer <token>` on every request (plus `target-sr-cluster` and
`Confluent-Identity-Pool-Id` from bearer.auth.logical.cluster and
bearer.auth.identity.pool.id; the logical cluster is required by the client).

The client caches ids, schemas and latest versions; the caches are cleared
before each read, so every call below is a real HTTP request.

The schemas are JSON Schema (draft 2020-12), checked under BACKWARD (the new
schema must accept data written with the old one):
  v1           closed content model ("additionalProperties": false)
  v2           v1 plus an optional property: compatible, since v1 data
               cannot carry that property
  incompatible v2 with "amount" narrowed from number to integer: v1/v2 data
               with amount 12.5 would be rejected

Exit status: 0 once the JSON line is printed (the caller asserts on its
values; "failed" lists the expectations that did not hold), 1 with a message
on stderr on any unexpected exception (an error status where success was
expected, a connection failure, a malformed answer).
"""
import json
import sys
import traceback

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schemas(subject):
    v1 = {
        "$schema": DRAFT,
        "title": subject,
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number"},
        },
        "required": ["order_id", "amount"],
        "additionalProperties": False,
        "examples": [{"order_id": "o-1", "amount": 12.5}],
    }
    v2 = {
        "$schema": DRAFT,
        "title": subject,
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number"},
            "note": {"type": "string"},
        },
        "required": ["order_id", "amount"],
        "additionalProperties": False,
        "examples": [
            {"order_id": "o-1", "amount": 12.5},
            {"order_id": "o-2", "amount": 3, "note": "gift"},
        ],
    }
    incompatible = {
        "$schema": DRAFT,
        "title": subject,
        "type": "object",
        "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "integer"},
            "note": {"type": "string"},
        },
        "required": ["order_id", "amount"],
        "additionalProperties": False,
        "examples": [{"order_id": "o-3", "amount": 12, "note": "whole"}],
    }
    return v1, v2, incompatible


def as_schema(doc):
    return Schema(json.dumps(doc), "JSON")


def parsed(schema):
    return json.loads(schema.schema_str) if schema.schema_str is not None else None


def main(argv):
    if len(argv) != 4:
        print("usage: client.py <url> <token> <subject>", file=sys.stderr)
        return 2
    url, token, subject = argv[1:]
    v1, v2, bad = schemas(subject)
    common = {
        "url": url,
        "timeout": 15,
        # A server error should show at once, not after backed-off retries.
        "max.retries": 0,
    }
    client = SchemaRegistryClient(
        dict(
            common,
            **{
                "bearer.auth.credentials.source": "STATIC_TOKEN",
                "bearer.auth.token": token,
                "bearer.auth.logical.cluster": "x",
                "bearer.auth.identity.pool.id": "x",
            },
        )
    )
    anonymous = SchemaRegistryClient(dict(common))
    out = {"subject": subject}

    # A mutation without a token is refused (before anything is registered).
    try:
        anonymous.register_schema(subject, as_schema(v1))
        out["unauthenticated_register_status"] = 200
    except SchemaRegistryError as e:
        out["unauthenticated_register_status"] = e.http_status_code

    # v1
    v1_id = client.register_schema(subject, as_schema(v1))
    out["v1_id"] = v1_id

    # Pin the subject's level so the checks below do not depend on the
    # host's global default; then read both levels back.
    set_answer = client.set_compatibility(subject_name=subject, level="BACKWARD")
    out["config_set"] = set_answer.get("compatibility") if isinstance(set_answer, dict) else set_answer
    out["config_subject"] = client.get_compatibility(subject)
    out["config_global"] = client.get_compatibility()

    client.clear_caches()
    fetched = client.get_schema(v1_id)
    out["fetched_type"] = fetched.schema_type
    out["fetched_equal"] = parsed(fetched) == v1 and fetched.schema_type == "JSON"

    client.clear_caches()
    latest1 = client.get_latest_version(subject)
    out["latest_after_v1"] = {"version": latest1.version, "id": latest1.schema_id}
    out["latest_after_v1_equal"] = parsed(latest1.schema) == v1 and latest1.subject == subject

    client.clear_caches()
    found = client.lookup_schema(subject, as_schema(v1))
    out["lookup_v1"] = {"version": found.version, "id": found.schema_id}

    # Not registered under the subject: the lookup answers 404.
    client.clear_caches()
    try:
        client.lookup_schema(subject, as_schema(bad))
        out["lookup_unregistered_status"] = 200
    except SchemaRegistryError as e:
        out["lookup_unregistered_status"] = e.http_status_code

    # Compatibility tests against the latest version (v1).
    out["compatible_ok"] = client.test_compatibility(subject, as_schema(v2))
    out["incompatible_ok"] = client.test_compatibility(subject, as_schema(bad), verbose=True)

    # v2
    client.clear_caches()
    v2_id = client.register_schema(subject, as_schema(v2))
    out["v2_id"] = v2_id

    client.clear_caches()
    latest = client.get_latest_version(subject)
    out["latest_version"] = latest.version
    out["latest_id"] = latest.schema_id
    out["latest_equal"] = parsed(latest.schema) == v2 and latest.schema.schema_type == "JSON"

    client.clear_caches()
    first = client.get_version(subject, 1)
    out["version_1"] = {"version": first.version, "id": first.schema_id}
    out["version_1_equal"] = parsed(first.schema) == v1

    client.clear_caches()
    out["fetched_v2_equal"] = parsed(client.get_schema(v2_id)) == v2

    out["subjects"] = client.get_subjects()
    out["versions"] = client.get_versions(subject)

    # The incompatible one is refused with 409.
    client.clear_caches()
    try:
        bad_id = client.register_schema(subject, as_schema(bad))
        out["incompatible_register_status"] = 200
        out["incompatible_register_id"] = bad_id
    except SchemaRegistryError as e:
        out["incompatible_register_status"] = e.http_status_code
        out["incompatible_register_error_code"] = e.error_code
        out["incompatible_register_message"] = e.error_message

    # Registering a schema the subject already has is idempotent (what a
    # producer with auto-registration does on every start): same id, no new
    # version.
    client.clear_caches()
    out["reregister_v1_id"] = client.register_schema(subject, as_schema(v1))
    out["versions_after_reregister"] = client.get_versions(subject)

    expected = {
        "unauthenticated_register_status": 401,
        "config_set": "BACKWARD",
        "config_subject": "BACKWARD",
        "fetched_equal": True,
        "latest_after_v1": {"version": 1, "id": v1_id},
        "latest_after_v1_equal": True,
        "lookup_v1": {"version": 1, "id": v1_id},
        "lookup_unregistered_status": 404,
        "compatible_ok": True,
        "incompatible_ok": False,
        "latest_version": 2,
        "latest_id": v2_id,
        "latest_equal": True,
        "version_1": {"version": 1, "id": v1_id},
        "version_1_equal": True,
        "fetched_v2_equal": True,
        "versions": [1, 2],
        "incompatible_register_status": 409,
        "reregister_v1_id": v1_id,
        "versions_after_reregister": [1, 2],
    }
    failed = [k for k, v in expected.items() if out.get(k) != v]
    if v2_id == v1_id:
        failed.append("v2_id")
    if subject not in (out["subjects"] or []):
        failed.append("subjects")
    out["failed"] = failed
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception as e:  # noqa: BLE001 - any surprise is a failure of the API under test
        traceback.print_exc()
        print("client.py: unexpected {}: {}".format(type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
