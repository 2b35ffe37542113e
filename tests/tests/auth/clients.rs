//! Real clients: skopeo, podman and containerd logging in through the
//! Docker token flow.

use super::*;

/// A small uncompressed tar layer holding one random file, made by `tar`.
fn tar_layer(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let root = dir.join(format!("layer-{name}"));
    std::fs::create_dir_all(&root).expect("layer dir");
    std::fs::write(root.join(format!("{name}.txt")), random_name("content-")).expect("layer file");
    let tar = dir.join(format!("layer-{name}.tar"));
    run(Command::new(require_tool("tar", "tar")).arg("-cf").arg(&tar).arg("-C").arg(&root).arg("."));
    std::fs::read(&tar).expect("read tar")
}

#[tokio::test]
async fn skopeo_and_podman_log_in_through_the_token_flow() {
    let _g = EXCLUSIVE.read().await;
    let cfg = htpasswd_config("", "");
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(10))], &[]).await;
    let host = s.host();
    let work = tempfile::tempdir().expect("tmp");
    let src = work.path().join("src");
    // Real tar layers: podman unpacks what it pulls.
    let img = Image::from_layers(vec![tar_layer(work.path(), "a"), tar_layer(work.path(), "b")]);
    write_oci_layout(&src, &img, "v1");
    let src_ref = format!("oci:{}:v1", src.display());

    // Refused: wrong password, no credentials, and a user without push.
    let out = run_fail(
        skopeo()
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", "alice:wrong-Pw-123"])
            .arg(&src_ref)
            .arg(format!("docker://{host}/myorg/app:v1")),
    );
    assert!(out.contains("401") || out.to_lowercase().contains("unauthorized"), "wrong password: {out}");
    let out = run_fail(
        skopeo().args(["copy", "--dest-tls-verify=false"]).arg(&src_ref).arg(format!("docker://{host}/myorg/app:v1")),
    );
    assert!(out.contains("401") || out.to_lowercase().contains("unauthorized"), "anonymous: {out}");
    let out = run_fail(
        skopeo()
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", &format!("bob:{BOB_PW}")])
            .arg(&src_ref)
            .arg(format!("docker://{host}/myorg/app:v1")),
    );
    assert!(out.contains("denied") || out.contains("403") || out.contains("401"), "bob cannot push myorg: {out}");
    assert_eq!(
        s.client().get("/v2/myorg/app/manifests/v1", Some(&basic("alice", ALICE_PW))).await.status,
        404,
        "nothing was pushed"
    );

    // alice (bcrypt) pushes; bob (SHA-crypt) pulls; digests identical.
    let before = request_log(&s.logs()).len();
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--preserve-digests", "--dest-creds", &format!("alice:{ALICE_PW}")])
        .arg(&src_ref)
        .arg(format!("docker://{host}/myorg/app:v1")));
    let out_dir = work.path().join("out");
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("bob:{BOB_PW}")])
        .arg(format!("docker://{host}/myorg/app:v1"))
        .arg(format!("oci:{}:v1", out_dir.display())));
    assert_eq!(oci_layout_manifest_digest(&out_dir, "v1"), img.digest, "pulled digest identical");
    // bob pushes to his own namespace; carol (SHA-crypt 256) pulls it.
    run(skopeo()
        .args(["copy", "--dest-tls-verify=false", "--dest-creds", &format!("bob:{BOB_PW}")])
        .arg(&src_ref)
        .arg(format!("docker://{host}/bob/app:v1")));
    run_fail(
        skopeo()
            .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("carol:{CAROL_PW}")])
            .arg(format!("docker://{host}/bob/app:v1"))
            .arg(format!("oci:{}:bob", out_dir.display())),
    );
    run_fail(
        skopeo()
            .args([
                "copy",
                "--src-tls-verify=false",
                "--preserve-digests",
                "--src-creds",
                &format!("carol:wrong-{CAROL_PW}"),
            ])
            .arg(format!("docker://{host}/myorg/app:v1"))
            .arg(format!("oci:{}:carol", out_dir.display())),
    );
    run(skopeo()
        .args(["copy", "--src-tls-verify=false", "--preserve-digests", "--src-creds", &format!("carol:{CAROL_PW}")])
        .arg(format!("docker://{host}/myorg/app:v1"))
        .arg(format!("oci:{}:carol", out_dir.display())));
    assert_eq!(oci_layout_manifest_digest(&out_dir, "carol"), img.digest);

    // The server log shows the token flow: skopeo was challenged, fetched
    // /token with Basic credentials, then sent Bearer tokens on the API.
    let log = request_log(&s.logs());
    let flow = &log[before..];
    let token_reqs: Vec<_> = flow.iter().filter(|(_, p, _, _)| p == "/token").collect();
    assert!(!token_reqs.is_empty(), "skopeo never asked /token:\n{flow:?}");
    assert!(token_reqs.iter().all(|(_, _, _, a)| a == "basic"), "token requests carry Basic: {token_reqs:?}");
    // carol's wrong password is the only refused login.
    let refused = token_reqs.iter().filter(|(_, _, st, _)| *st == 401).count();
    assert_eq!(refused, 1, "token requests: {token_reqs:?}");
    assert!(token_reqs.iter().all(|(_, _, st, _)| *st == 200 || *st == 401), "token requests: {token_reqs:?}");
    let api: Vec<_> = flow.iter().filter(|(_, p, _, _)| p.starts_with("/v2/") && p != "/v2/").collect();
    let bearer_ok = api.iter().filter(|(_, _, st, a)| a == "bearer" && *st < 400).count();
    assert!(bearer_ok >= 4, "API requests with Bearer tokens: {bearer_ok}\n{api:?}");
    assert!(
        api.iter().all(|(_, _, _, a)| a != "basic"),
        "after the challenge, skopeo uses tokens, never Basic, on the API:\n{api:?}"
    );

    // podman login (wrong password refused), then push and pull with the auth file.
    let podman = Podman::new();
    let mut login = podman.auth("login");
    login.args(["--tls-verify=false", "-u", "alice", "-p", "wrong-Pw-456", &host]);
    let out = run_fail(&mut login);
    let lower = out.to_lowercase();
    assert!(
        lower.contains("invalid username/password") || lower.contains("unauthorized") || out.contains("401"),
        "podman login wrong password: {out}"
    );
    run(podman.auth("login").args(["--tls-verify=false", "-u", "alice", "-p", ALICE_PW, &host]));
    let authfile = std::fs::read_to_string(podman.authfile()).expect("podman wrote its auth file");
    assert!(authfile.contains(&host), "auth file names the registry: {authfile}");
    let image = format!("{host}/myorg/app:v1");
    run(podman.auth("pull").args(["--tls-verify=false", &image]));
    let pushed = format!("{host}/myorg/podman:v2");
    run(podman.cmd().args(["tag", &image, &pushed]));
    let digest_file = podman.dir.path().join("digest");
    run(podman.auth("push").args(["--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&pushed));
    let digest = std::fs::read_to_string(&digest_file).expect("digest file");
    let r = s.client().get("/v2/myorg/podman/manifests/v2", Some(&basic("alice", ALICE_PW))).await;
    assert_eq!(r.status, 200, "podman's push landed");
    assert_eq!(r.header("docker-content-digest"), digest.trim());
    run(podman.cmd().args(["rmi", "-a", "-f"]));
    run(podman.auth("pull").args(["--tls-verify=false", &pushed]));
    // Logged out, podman is refused.
    run(podman.auth("logout").arg(&host));
    let out = run_fail(podman.auth("push").args(["--tls-verify=false", &pushed]));
    assert!(out.to_lowercase().contains("unauthorized") || out.contains("401"), "push after logout: {out}");
    let log = request_log(&s.logs());
    assert!(
        log.iter().filter(|(_, p, _, a)| p == "/token" && a == "basic").count() > token_reqs.len(),
        "podman used /token"
    );

    let secrets = vec![
        ALICE_PW.to_owned(),
        BOB_PW.to_owned(),
        CAROL_PW.to_owned(),
        "wrong-Pw-123".into(),
        "wrong-Pw-456".into(),
        basic("alice", ALICE_PW),
        basic("bob", BOB_PW),
    ];
    assert_no_secrets("server log", &s.logs(), &secrets);
    assert!(!s.logs().contains("Bearer ey"), "no bearer token in the log");
}

#[tokio::test]
async fn containerd_pulls_with_credentials_through_the_token_flow() {
    let _g = EXCLUSIVE.read().await;
    let s = AuthServer::start(&cove_bin(), &htpasswd_config("", ""), &[("htpasswd", htpasswd_file(4))], &[]).await;
    let work = tempfile::tempdir().expect("tmp");
    let img = Image::from_layers(vec![tar_layer(work.path(), "ctr")]);
    push_image(&s.client(), Some(&basic("alice", ALICE_PW)), "myorg/ctr", &img).await;
    let ctd = containerd::Containerd::start();
    let reference = format!("{}/myorg/ctr:v1", s.host());
    let pull = |user: &str| {
        ctd.ctr(&["images", "pull", "--plain-http", "--snapshotter", "native", "--user", user, &reference])
    };
    let out = pull(&format!("alice:{}", "wrong-Pw-789"));
    assert!(!out.status.success(), "containerd with a wrong password must fail");
    let out = pull(&format!("bob:{BOB_PW}"));
    assert!(out.status.success(), "ctr pull as bob: {}", String::from_utf8_lossy(&out.stderr));
    let out = ctd.ctr(&["images", "ls", "-q"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&reference), "image listed");
    let log = request_log(&s.logs());
    assert!(
        log.iter().any(|(m, p, st, _)| m == "GET" && p == "/token" && *st == 200),
        "containerd used /token:\n{log:?}"
    );
    // containerd first tries the OAuth2 POST form (405 here) and falls back to GET.
    let token_reqs: Vec<_> = log.iter().filter(|(_, p, _, _)| p == "/token").collect();
    eprintln!("containerd token requests: {token_reqs:?}");
    let manifest_gets: Vec<_> =
        log.iter().filter(|(m, p, st, _)| m == "GET" && p.contains("/manifests/") && *st == 200).collect();
    assert!(!manifest_gets.is_empty() && manifest_gets.iter().all(|(_, _, _, a)| a == "bearer"), "{manifest_gets:?}");
    assert_no_secrets("server log", &s.logs(), &[BOB_PW.into(), "wrong-Pw-789".into(), basic("bob", BOB_PW)]);
}
