"""Shared by the client-library scripts in this folder.

The Rust black-box test (crates/fhirside/tests/blackbox/clients.rs) starts Fhirside, registers apps
and users, and passes the connection facts in FHIRSIDE_* environment variables. REQUESTS_CA_BUNDLE
and SSL_CERT_FILE point at the server's ca.pem, so `requests` (which MSAL and azure-identity use)
trusts its certificate with no code here.
"""

import base64
import json
import os
import sys

import requests


def env(name):
    value = os.environ.get(name)
    if not value:
        fail(f"the environment variable {name} is not set")
    return value


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


def expect(response, status, what):
    """The response, when its status is `status`; else the script fails showing the body."""
    if response.status_code != status:
        fail(f"{what}: expected HTTP {status}, got {response.status_code}: {response.text[:1000]}")
    return response


def access_token(result, what):
    """The access token of an MSAL result dict, or a failure with MSAL's error."""
    if not isinstance(result, dict) or "access_token" not in result:
        fail(f"{what}: no token: {result}")
    return result["access_token"]


def claims(token):
    """A JWT's claims, unverified (the FHIR server verifies it): for checks and messages only."""
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def write_and_read(base, token, family):
    """POST a Patient (201), read it back (200); without a token the read is refused (401)."""
    patient = {"resourceType": "Patient", "name": [{"family": family}]}
    headers = {**bearer(token), "Content-Type": "application/fhir+json"}
    created = expect(requests.post(f"{base}/Patient", json=patient, headers=headers), 201, "POST /Patient")
    patient_id = created.json()["id"]
    read = expect(requests.get(f"{base}/Patient/{patient_id}", headers=bearer(token)), 200, "GET /Patient/{id}")
    check(read.json()["name"][0]["family"] == family, f"read back another Patient: {read.text}")
    expect(requests.get(f"{base}/Patient/{patient_id}"), 401, "GET /Patient/{id} without a token")
    return patient_id
