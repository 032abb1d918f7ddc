"""Certificate credentials (private_key_jwt): the app proves itself with a signed assertion instead
of a secret, as Entra apps with an uploaded certificate do.

`certificate_credentials.py generate DIR` makes an RSA key and a self-signed certificate
(DIR/key.pem, DIR/cert.pem) and the JWK Set to register with `fhirside app create --jwks
DIR/jwks.json`: the public key with its certificate thumbprints, `x5t` (SHA-1) and `x5t#S256`
(SHA-256), base64url, which is what assertion headers name the key by.

Without arguments it gets tokens with that key (FHIRSIDE_KEY_DIR) two ways and uses each:
- MSAL with `private_key` + `public_certificate`: MSAL signs PS256 and names the key by `x5t#S256`;
- azure-identity's CertificateCredential: it passes MSAL a SHA-1 thumbprint, so RS256 and `x5t`.
"""

import base64
import datetime
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def generate(directory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fhirside-client-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    numbers = key.public_key().public_numbers()
    x5t = b64url(cert.fingerprint(hashes.SHA1()))
    jwk = {
        "kty": "RSA",
        "use": "sig",
        "kid": x5t,  # Entra's key ids are the SHA-1 thumbprint too
        "n": b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        "e": b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
        "x5t": x5t,
        "x5t#S256": b64url(cert.fingerprint(hashes.SHA256())),
        "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()],
    }
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "key.pem"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(os.path.join(directory, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(os.path.join(directory, "jwks.json"), "w") as f:
        json.dump({"keys": [jwk]}, f, indent=2)
    print(f"wrote key.pem, cert.pem and jwks.json to {directory}")


def use():
    import azure.identity
    import msal
    from azure.identity import CertificateCredential

    from common import access_token, check, claims, env, write_and_read

    base = env("FHIRSIDE_BASE")
    tenant = env("FHIRSIDE_TENANT")
    authority = env("FHIRSIDE_AUTHORITY")
    client_id = env("FHIRSIDE_CLIENT_ID")
    directory = env("FHIRSIDE_KEY_DIR")
    with open(os.path.join(directory, "key.pem")) as f:
        private_key = f.read()
    with open(os.path.join(directory, "cert.pem")) as f:
        certificate = f.read()

    app = msal.ConfidentialClientApplication(
        client_id,
        client_credential={"private_key": private_key, "public_certificate": certificate},
        authority=authority,
        instance_discovery=False,
    )
    token = access_token(app.acquire_token_for_client(scopes=[f"{base}/.default"]), "msal with a certificate")
    got = claims(token)
    check(got["appid"] == client_id and got["appidacr"] == "2", f"not a certificate-authenticated app token: {got}")
    first = write_and_read(base, token, "Msal-Certificate")

    credential = CertificateCredential(
        tenant,
        client_id,
        certificate_data=(private_key + certificate).encode(),
        authority=authority.removesuffix(f"/{tenant}"),
        disable_instance_discovery=True,
    )
    token = credential.get_token(f"{base}/.default").token
    check(claims(token)["appidacr"] == "2", f"not a certificate-authenticated app token: {claims(token)}")
    second = write_and_read(base, token, "Azure-Identity-Certificate")

    print(f"ok: msal {msal.__version__} (PS256, x5t#S256) wrote and read Patient/{first}; "
          f"azure-identity {azure.identity.__version__} CertificateCredential (RS256, x5t) wrote and read "
          f"Patient/{second}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["generate"] and len(sys.argv) == 3:
        generate(sys.argv[2])
    elif len(sys.argv) == 1:
        use()
    else:
        sys.exit(f"usage: {sys.argv[0]} [generate DIR]")
