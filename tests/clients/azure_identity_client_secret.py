"""azure-identity's ClientSecretCredential (the credential the Azure SDKs take) gets a token for the
FHIR service, which then writes and reads data.

azure-identity wants the authority *host* and builds `{host}/{tenant}` itself; instance discovery
must be off because the host is not Microsoft's.
"""

import azure.identity
from azure.identity import ClientSecretCredential

from common import check, claims, env, write_and_read

base = env("FHIRSIDE_BASE")
tenant = env("FHIRSIDE_TENANT")
authority = env("FHIRSIDE_AUTHORITY")
host = authority.removesuffix(f"/{tenant}")
check(host != authority, f"the authority {authority} does not end with the tenant {tenant}")

credential = ClientSecretCredential(
    tenant,
    env("FHIRSIDE_CLIENT_ID"),
    env("FHIRSIDE_CLIENT_SECRET"),
    authority=host,
    disable_instance_discovery=True,
)
token = credential.get_token(f"{base}/.default")
got = claims(token.token)
check(got["aud"] == base and got["appid"] == env("FHIRSIDE_CLIENT_ID"), f"unexpected claims: {got}")
check(token.expires_on > got["iat"], f"expires_on {token.expires_on} is not after iat {got['iat']}")

patient_id = write_and_read(base, token.token, "Azure-Identity")
print(f"ok: azure-identity {azure.identity.__version__} ClientSecretCredential (authority {host}); "
      f"wrote and read Patient/{patient_id}")
