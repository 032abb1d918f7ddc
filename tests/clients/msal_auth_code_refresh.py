"""MSAL Python, a user signs in: the authorization code flow with PKCE, then refresh tokens.

A web app (a confidential client with a registered redirect URI) starts the flow with MSAL; this
script plays the browser with `requests`: it opens MSAL's auth_uri, fills in Fhirside's sign-in form
and follows nothing further, handing the redirect's query back to MSAL. The user holds
"FHIR Data Reader": reads succeed (200), writes are forbidden (403). Refreshing gives a new access
token that works as well.
"""

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import msal
import requests

from common import access_token, bearer, check, claims, env, expect

base = env("FHIRSIDE_BASE")
username = env("FHIRSIDE_USERNAME")
redirect_uri = env("FHIRSIDE_REDIRECT_URI")
scopes = [f"{base}/user_impersonation"]

app = msal.ConfidentialClientApplication(
    env("FHIRSIDE_CLIENT_ID"),
    client_credential=env("FHIRSIDE_CLIENT_SECRET"),
    authority=env("FHIRSIDE_AUTHORITY"),
    instance_discovery=False,
)
flow = app.initiate_auth_code_flow(scopes=scopes, redirect_uri=redirect_uri)
check("code_verifier" in flow and "code_challenge=" in flow["auth_uri"], f"MSAL did not use PKCE: {flow}")


class SignInForm(HTMLParser):
    """The page's form: where it posts to, and its input fields' names and values."""

    def __init__(self):
        super().__init__()
        self.action, self.fields, self.in_form = None, {}, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.action, self.in_form = attrs.get("action"), True
        elif tag == "input" and self.in_form and attrs.get("name"):
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        self.in_form = self.in_form and tag != "form"


def sign_in(auth_uri, password):
    """The browser: GET the sign-in page, POST its form with the user's name and password."""
    page = expect(requests.get(auth_uri), 200, "GET the authorization endpoint")
    form = SignInForm()
    form.feed(page.text)
    check("login" in form.fields and "passwd" in form.fields, f"no sign-in form on the page: {page.text[:1000]}")
    form.fields.update(login=username, passwd=password)
    # A form without an action posts back to the page's own URL.
    return requests.post(urljoin(auth_uri, form.action or auth_uri), data=form.fields, allow_redirects=False)


# A wrong password shows the form again with an error, and redirects nowhere.
wrong = sign_in(flow["auth_uri"], "not-the-password")
check(wrong.status_code == 200 and "AADSTS50126" in wrong.text,
      f"a wrong password: expected the form again with AADSTS50126, got {wrong.status_code}: {wrong.text[:500]}")

signed_in = expect(sign_in(flow["auth_uri"], env("FHIRSIDE_PASSWORD")), 302, "POST the sign-in form")
location = signed_in.headers["Location"]
check(location.startswith(redirect_uri + "?"), f"redirected elsewhere: {location}")
query = dict(parse_qsl(urlsplit(location).query))
check(query.get("state") == flow["state"], f"state not returned: {query}")

result = app.acquire_token_by_auth_code_flow(flow, query)
token = access_token(result, "acquire_token_by_auth_code_flow")
check(result.get("id_token_claims", {}).get("preferred_username") == username, f"id token: {result}")
check("refresh_token" in result, f"no refresh token (MSAL asks offline_access): {result.keys()}")
got = claims(token)
check(got.get("upn") == username and got.get("idtyp") == "user", f"not a user token: {got}")
check("user_impersonation" in got.get("scp", "").split(), f"scp lacks user_impersonation: {got}")


def reads_but_cannot_write(token, what):
    expect(requests.get(f"{base}/Patient", headers=bearer(token)), 200, f"{what}: GET /Patient")
    headers = {**bearer(token), "Content-Type": "application/fhir+json"}
    expect(requests.post(f"{base}/Patient", json={"resourceType": "Patient"}, headers=headers), 403,
           f"{what}: POST /Patient as a FHIR Data Reader")


reads_but_cannot_write(token, "the first token")

# MSAL's cache knows the user now.
accounts = app.get_accounts(username=username)
check(len(accounts) == 1, f"MSAL's cache has no single account for {username}: {app.get_accounts()}")
account = accounts[0]
check(account["home_account_id"] == f"{got['oid']}.{got['tid']}",
      f"home_account_id is not '<oid>.<tid>' as with Entra (client_info): {account}")
cached = app.acquire_token_silent(scopes, account=account)
check(cached and cached.get("access_token") == token, "acquire_token_silent did not return the cached token")

# A forced refresh: MSAL redeems its cached refresh token for new tokens.
refreshed = app.acquire_token_silent(scopes, account=account, force_refresh=True)
token2 = access_token(refreshed, "acquire_token_silent(force_refresh=True)")
check(refreshed.get("token_source") == "identity_provider" and token2 != token, f"not refreshed: {refreshed}")
reads_but_cannot_write(token2, "the refreshed token")

# An app that keeps refresh tokens itself: the newest one, handed to MSAL explicitly.
newest_rt = next(app.token_cache.search(msal.TokenCache.CredentialType.REFRESH_TOKEN))["secret"]
check(newest_rt != result["refresh_token"], "the refresh token was not rotated")
again = app.acquire_token_by_refresh_token(newest_rt, scopes=scopes)
token3 = access_token(again, "acquire_token_by_refresh_token")
reads_but_cannot_write(token3, "the token from acquire_token_by_refresh_token")

print(f"ok: msal {msal.__version__} authorization code + PKCE as {username}, "
      f"then refresh (silent and explicit); reads 200, writes 403")
