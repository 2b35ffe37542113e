//! The htpasswd matrix: Basic authentication and registry tokens (with and
//! without the scope), the catalog per identity, cross-repository mounts.

use super::*;

/// The access rules of the htpasswd set-up, as a model: may `user` (None =
/// anonymous) do `action` on `repo`?
fn htpasswd_model(user: Option<&str>, repo: &str, action: &str) -> bool {
    let ns = repo.split('/').next().unwrap_or_default();
    match ns {
        // myorg/**: alice everything; any authenticated user pulls.
        "myorg" => user == Some("alice") || (user.is_some() && action == "pull"),
        // public/*: anyone pulls; alice pushes.
        // (`*` is one component: public/team/app falls to the default.)
        "public" if repo.split('/').count() == 2 => action == "pull" || (user == Some("alice") && action == "push"),
        // private/**: alice pulls and pushes.
        "private" => user == Some("alice") && action != "delete",
        // bob/**: bob everything.
        "bob" => user == Some("bob"),
        // Cached upstream namespace, no rule: default (authenticated) capped at pull.
        "docker.io" => user.is_some() && action == "pull",
        // No rule: default policy `authenticated`.
        _ => user.is_some(),
    }
}

#[tokio::test]
async fn matrix_htpasswd_basic_and_registry_tokens() {
    let _g = EXCLUSIVE.read().await;
    let up = empty_upstream().await;
    let cfg = htpasswd_config("[auth.rate_limit]\nmax_failures = 0\n", &upstream_config(&up));
    // debug logs: the secret scan below then covers everything the server says.
    let s = AuthServer::start(&cove_bin(), &cfg, &[("htpasswd", htpasswd_file(4))], &[("COVE_LOG", "debug")]).await;
    let c = s.client();
    let realm = format!("{}/token", s.base);
    let alice = basic("alice", ALICE_PW);
    let bob = basic("bob", BOB_PW);

    // Content: alice pushes to every local repository of the matrix.
    let mut repos = Vec::new();
    for name in ["myorg/team/app", "public/app", "private/app", "misc/app", "public/team/app"] {
        let img = Image::random(1);
        push_image(&c, Some(&alice), name, &img).await;
        repos.push(MatrixRepo { name: name.into(), image: img, upstream: false });
    }
    let img = Image::random(1);
    push_image(&c, Some(&bob), "bob/app", &img).await;
    repos.push(MatrixRepo { name: "bob/app".into(), image: img, upstream: false });
    repos.push(MatrixRepo { name: "docker.io/library/alpine".into(), image: Image::random(1), upstream: true });

    // Registry tokens: alice's with every scope of the matrix, alice's for an
    // unrelated repository only, and an anonymous one for public/app.
    let all_scopes: Vec<String> = repos.iter().map(|r| format!("repository:{}:pull,push,delete", r.name)).collect();
    let (scoped, access) = registry_token(&c, Some(&alice), &all_scopes).await;
    for r in &repos {
        let want: Vec<String> = ["delete", "pull", "push"]
            .iter()
            .filter(|a| htpasswd_model(Some("alice"), &r.name, a))
            .map(|a| a.to_string())
            .collect();
        assert_eq!(granted(&access, &r.name), want, "token grants alice exactly what the policy allows on {}", r.name);
    }
    let (unscoped, _) = registry_token(&c, Some(&alice), &["repository:elsewhere/x:pull".into()]).await;
    let (anon_token, anon_access) = registry_token(&c, None, &["repository:public/app:pull,push".into()]).await;
    assert_eq!(granted(&anon_access, "public/app"), vec!["pull"], "anonymous token: pull only");
    // Wrong password at the token endpoint: 401 with a Basic challenge.
    let r = c
        .get("/token?service=cove&scope=repository%3Amyorg%2Fteam%2Fapp%3Apull", Some(&basic("alice", "nope-wrong")))
        .await;
    assert_eq!(r.status, 401, "token endpoint with a wrong password: {}", r.body);
    assert_eq!(parse_challenge(&r.header("www-authenticate")).scheme, "Basic");

    let m = htpasswd_model;
    let whos = vec![
        Who::allowed_or("anonymous", None, move |r, a| m(None, r, a), Want::Unauthorized { error: None }),
        Who::allowed_or("alice(bcrypt)", Some(alice.clone()), move |r, a| m(Some("alice"), r, a), Want::Denied),
        Who::allowed_or("bob(sha512-crypt)", Some(bob.clone()), move |r, a| m(Some("bob"), r, a), Want::Denied),
        Who::allowed_or(
            "carol(sha256-crypt)",
            Some(basic("carol", CAROL_PW)),
            move |r, a| m(Some("carol"), r, a),
            Want::Denied,
        ),
        Who::invalid("wrong password", basic("alice", "alice-wrong-password")),
        Who::invalid("unknown user", basic("mallory", "mallory-password")),
        Who::invalid("malformed header", "Basic !!!not-base64!!!".into()),
        Who::allowed_or(
            "token with scope",
            Some(format!("Bearer {scoped}")),
            move |r, a| m(Some("alice"), r, a),
            Want::Denied,
        ),
        Who {
            label: "token without scope",
            header: Some(format!("Bearer {unscoped}")),
            want: Box::new(move |r, a| {
                if m(Some("alice"), r, a) {
                    Want::Unauthorized { error: Some("insufficient_scope") }
                } else {
                    Want::Denied
                }
            }),
        },
        Who::allowed_or(
            "anonymous token",
            Some(format!("Bearer {anon_token}")),
            move |r, a| m(None, r, a),
            Want::Unauthorized { error: None },
        ),
        Who::invalid("forged token", format!("Bearer {}x", &scoped[..scoped.len() - 1])),
    ];
    let secrets: Vec<String> = vec![
        ALICE_PW.into(),
        BOB_PW.into(),
        CAROL_PW.into(),
        "alice-wrong-password".into(),
        "mallory-password".into(),
        alice.clone(),
        bob.clone(),
        scoped.clone(),
        unscoped.clone(),
        anon_token.clone(),
    ];
    let cells = run_matrix("htpasswd", &c, &whos, &repos, Some(&realm), None, &secrets).await;

    // GET /v2/: authentication only.
    assert_eq!(c.get("/v2/", None).await.status, 401);
    assert_eq!(c.get("/v2/", Some(&alice)).await.status, 200);
    assert_eq!(c.get("/v2/", Some(&format!("Bearer {scoped}"))).await.status, 200);
    let r = c.get("/v2/", Some(&basic("alice", "alice-wrong-password"))).await;
    assert_eq!(r.status, 401);
    let ch = parse_challenge(&r.header("www-authenticate"));
    assert_eq!(
        (ch.scheme.as_str(), ch.get("realm"), ch.get("service")),
        ("Bearer", Some(realm.as_str()), Some("cove"))
    );

    // The catalog, filtered by what each identity may pull.
    let catalog = |auth: Option<String>| {
        let c = c.clone();
        async move {
            let r = c.get("/v2/_catalog", auth.as_deref()).await;
            (r.status, serde_json::from_str::<serde_json::Value>(&r.body).unwrap_or_default())
        }
    };
    let r = c.get("/v2/_catalog", None).await;
    assert_eq!(r.status, 401, "anonymous catalog needs a login");
    let ch = parse_challenge(&r.header("www-authenticate"));
    assert_eq!((ch.get("realm"), ch.get("scope")), (Some(realm.as_str()), Some("registry:catalog:*")), "{ch:?}");
    // Registry tokens list the catalog only with the catalog scope, which an
    // anonymous caller cannot get; alice's repository-only token is not enough.
    let (anon_cat, anon_cat_access) = registry_token(&c, None, &["registry:catalog:*".into()]).await;
    assert!(!anon_cat_access.to_string().contains("catalog"), "anonymous gets no catalog scope: {anon_cat_access}");
    for (who, tok) in [("anonymous token", &anon_cat), ("alice's repository token", &scoped)] {
        let r = c.get("/v2/_catalog", Some(&format!("Bearer {tok}"))).await;
        assert_eq!(r.status, 401, "{who} on the catalog: {}", r.body);
        let ch = parse_challenge(&r.header("www-authenticate"));
        assert_eq!(
            (ch.get("scope"), ch.get("error")),
            (Some("registry:catalog:*"), Some("insufficient_scope")),
            "{who}: {ch:?}"
        );
    }
    for (user, hdr) in [("alice", &alice), ("bob", &bob)] {
        let (st, v) = catalog(Some(hdr.clone())).await;
        assert_eq!(st, 200, "{user} catalog: {v}");
        let mut want: Vec<String> = repos
            .iter()
            .filter(|r| !r.upstream && htpasswd_model(Some(user), &r.name, "pull"))
            .map(|r| r.name.clone())
            .collect();
        want.sort();
        let got: Vec<String> = v["repositories"]
            .as_array()
            .expect("repositories")
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect();
        assert_eq!(got, want, "{user}'s catalog");
        // Page by page, the filtered catalog is the same list, and `Link`
        // is there exactly when more visible repositories follow.
        for n in [1, 2] {
            let mut paged: Vec<String> = Vec::new();
            loop {
                let mut url = format!("/v2/_catalog?n={n}");
                if let Some(l) = paged.last() {
                    url.push_str(&format!("&last={l}"));
                }
                let r = c.get(&url, Some(hdr)).await;
                assert_eq!(r.status, 200, "{user} {url}: {}", r.body);
                let v: serde_json::Value = serde_json::from_str(&r.body).expect("catalog json");
                let page: Vec<String> = v["repositories"]
                    .as_array()
                    .expect("repositories")
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect();
                assert!(page.len() <= n, "{user} {url}: {page:?}");
                paged.extend(page);
                let more = paged.len() < want.len();
                assert_eq!(!r.header("link").is_empty(), more, "{user} {url}: Link iff more follow");
                if !more {
                    break;
                }
            }
            assert_eq!(paged, want, "{user}'s catalog in pages of {n}");
        }
    }
    // Through the token flow: bob's token with the catalog scope sees bob's list.
    let (bob_cat, _) = registry_token(&c, Some(&bob), &["registry:catalog:*".into()]).await;
    let (st, v) = catalog(Some(format!("Bearer {bob_cat}"))).await;
    assert_eq!(st, 200, "catalog with a registry token: {v}");
    assert!(!v.to_string().contains("private/app"), "bob's catalog hides private/app: {v}");
    assert!(v.to_string().contains("bob/app"), "bob's catalog shows bob/app: {v}");

    // Cross-repository mount: bob may push bob/** but not pull private/**, so
    // the mount falls back to a plain upload session (202); from public/app
    // (which he may pull) it mounts (201).
    let private_blob = sha256_digest(&repos[2].image.config);
    let r = c
        .send(
            "POST",
            &format!("/v2/bob/app/blobs/uploads/?mount={private_blob}&from=private/app"),
            Some(&bob),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 202, "mount from a repository bob cannot pull must fall back to an upload: {}", r.body);
    let r = c.get(&format!("/v2/bob/app/blobs/{private_blob}"), Some(&bob)).await;
    assert_eq!(r.status, 404, "the private blob did not leak into bob/app");
    let public_blob = sha256_digest(&repos[1].image.config);
    let r = c
        .send("POST", &format!("/v2/bob/app/blobs/uploads/?mount={public_blob}&from=public/app"), Some(&bob), &[], None)
        .await;
    assert_eq!(r.status, 201, "mount from a pullable repository: {}", r.body);
    // alice may pull private/app: her mount into myorg works.
    let r = c
        .send(
            "POST",
            &format!("/v2/myorg/team/app/blobs/uploads/?mount={private_blob}&from=private/app"),
            Some(&alice),
            &[],
            None,
        )
        .await;
    assert_eq!(r.status, 201, "alice mounts from private/app: {}", r.body);

    // No secret in the server's (debug-level) log.
    let mut all = secrets.clone();
    all.push(bob_cat);
    assert_no_secrets("server log", &s.logs(), &all);
    report(&format!("auth matrix [htpasswd]: {cells} cells (11 identities x 7 repositories x 6 actions) as expected"));
}
