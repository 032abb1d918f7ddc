//! The storage servers of these tests: those of `fhirside_objects::testing`, and moto with an IAM
//! user whose access key signs every request.

use fhirside_fetch::{Client, Request};
use fhirside_objects::S3Auth;

pub use fhirside_objects::testing::{azurite, moto_server, temp_dir, Server, AZURITE_ACCOUNT, AZURITE_KEY};

/// moto's server, with authentication on: the first three requests (unauthenticated) create an
/// IAM user allowed everything on S3 and its access key, which the returned credentials are, so
/// that every S3 request of the test has its Signature V4 checked.
pub async fn moto() -> (Server, S3Auth) {
    let server = moto_server(true);
    let port = server.port;

    // Unsigned, but naming IAM in the credential scope, which is how moto routes the request.
    let iam = |form: String| {
        Request::new("POST", &format!("http://127.0.0.1:{port}/"))
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDSETUP/20240101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
            )
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form)
    };
    let client = client();
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:*","Resource":"*"}]}"#;
    for form in [
        "Action=CreateUser&UserName=fhirside&Version=2010-05-08".to_owned(),
        format!(
            "Action=PutUserPolicy&UserName=fhirside&PolicyName=s3&PolicyDocument={}&Version=2010-05-08",
            form_encode(policy)
        ),
    ] {
        let response = client.send(iam(form)).await.unwrap();
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
    }
    let response =
        client.send(iam("Action=CreateAccessKey&UserName=fhirside&Version=2010-05-08".into())).await.unwrap();
    let body = String::from_utf8_lossy(&response.body).into_owned();
    let element = |name: &str| {
        let start = body.find(&format!("<{name}>")).unwrap_or_else(|| panic!("no {name} in {body}")) + name.len() + 2;
        body[start..start + body[start..].find('<').unwrap()].to_owned()
    };
    let auth = S3Auth {
        access_key_id: element("AccessKeyId"),
        secret_access_key: element("SecretAccessKey"),
        session_token: None,
    };
    (server, auth)
}

fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A client trusting a test CA (no https is used; the machine may have no system roots).
pub fn client() -> Client {
    let ca = fhirside_fetch::testing::temp_file(&fhirside_fetch::testing::tls_fixture().0);
    let client = Client::new(Some(&ca)).unwrap();
    let _ = std::fs::remove_file(ca);
    client
}
