"""The v1 token endpoint (`{authority}/oauth2/token`, `resource=`), as older ADAL-era code and many
scripts call it, with plain `requests`: the response has v1's shape (numbers as strings, `resource`
echoed) and the token writes and reads FHIR data.
"""

import time

import requests

from common import check, claims, env, expect, write_and_read

base = env("FHIRSIDE_BASE")
response = requests.post(
    f"{env('FHIRSIDE_AUTHORITY')}/oauth2/token",
    data={
        "grant_type": "client_credentials",
        "client_id": env("FHIRSIDE_CLIENT_ID"),
        "client_secret": env("FHIRSIDE_CLIENT_SECRET"),
        "resource": base,
    },
)
body = expect(response, 200, "POST /oauth2/token").json()
check(body["token_type"] == "Bearer", f"token_type: {body}")
check(body["resource"] == base, f"resource not echoed: {body}")
for name in ("expires_in", "ext_expires_in", "expires_on", "not_before"):
    check(isinstance(body[name], str) and body[name].isdigit(), f"{name} is not a number in a string: {body}")
check(abs(int(body["expires_on"]) - int(time.time()) - int(body["expires_in"])) < 120, f"expires_on: {body}")
got = claims(body["access_token"])
check(got["ver"] == "1.0" and got["aud"] == base, f"not a v1 token for {base}: {got}")

patient_id = write_and_read(base, body["access_token"], "V1-Endpoint")
print(f"ok: v1 token endpoint; expires_in {body['expires_in']!r}, wrote and read Patient/{patient_id}")
