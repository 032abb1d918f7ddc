"""MSAL Python, client credentials with a client secret: a daemon app gets a token for the FHIR
service and writes and reads data with it.

Fhirside is not a Microsoft host, so MSAL's instance discovery (a call to login.microsoftonline.com)
is turned off; MSAL then reads {authority}/v2.0/.well-known/openid-configuration.
"""

import jwt  # PyJWT, which MSAL depends on
import msal
import requests

from common import access_token, check, claims, env, expect, write_and_read

base = env("FHIRSIDE_BASE")
authority = env("FHIRSIDE_AUTHORITY")
client_id = env("FHIRSIDE_CLIENT_ID")

app = msal.ConfidentialClientApplication(
    client_id,
    client_credential=env("FHIRSIDE_CLIENT_SECRET"),
    authority=authority,
    instance_discovery=False,
)
scopes = [f"{base}/.default"]
result = app.acquire_token_for_client(scopes=scopes)
token = access_token(result, "acquire_token_for_client")
check(result.get("token_source") == "identity_provider", f"first token not from the authority: {result}")

got = claims(token)
check(got["appid"] == client_id, f"appid is not the client id: {got}")
check(got["tid"] == env("FHIRSIDE_TENANT"), f"tid is not the tenant: {got}")
check(got["aud"] == base, f"aud is not the FHIR base URL: {got}")

# An API validating Fhirside's tokens the usual way: keys from the discovery document's jwks_uri.
discovery = expect(requests.get(f"{authority}/.well-known/openid-configuration"), 200, "v1 discovery").json()
key = jwt.PyJWKClient(discovery["jwks_uri"]).get_signing_key_from_jwt(token)
jwt.decode(token, key.key, algorithms=["RS256"], audience=base, issuer=discovery["issuer"])

# MSAL caches the token: a second call does not go to the authority.
again = app.acquire_token_for_client(scopes=scopes)
check(again.get("token_source") == "cache", f"second token not from MSAL's cache: {again}")

patient_id = write_and_read(base, token, "Msal-Client-Credentials")
print(f"ok: msal {msal.__version__} client credentials for appid {got['appid']}; wrote and read Patient/{patient_id}")
