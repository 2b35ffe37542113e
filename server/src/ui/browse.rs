//! The pages behind a session: the repository list, a repository's tags,
//! an image, deleting (confirm, then delete), the cache dashboard and GC or
//! retention dry runs. Each asks the access policy what the session's
//! identity may pull or delete; what it may not pull it does not see.

use http::StatusCode;

use cove_core::{Action, Reference, RegistryError, RepoName};

use super::{dashboard, model, not_allowed, page_of, pages, Form, Reply, Req, Ui, REPOS_PER_PAGE, TAGS_PER_PAGE};

impl Ui {
    pub(super) async fn repo_list(&self, r: &Req<'_>) -> Result<Reply, RegistryError> {
        let filter = r.query.get("q").unwrap_or_default().trim().to_owned();
        let needle = filter.to_ascii_lowercase();
        let auth = &r.cx.grant.auth;
        let id = &r.session.identity;
        let asked = r.query.get("page");
        let (mut entries, total) = model::repositories(
            r.cx.registry,
            |n| auth.allows(id, Action::Pull, n) && n.as_str().contains(&needle),
            |total| {
                let (page, _) = page_of(asked, total, REPOS_PER_PAGE);
                (page - 1) * REPOS_PER_PAGE..page * REPOS_PER_PAGE
            },
        )
        .await?;
        let (page, pages) = page_of(asked, total, REPOS_PER_PAGE);
        for e in &mut entries {
            e.tags = r.cx.registry.tag_list(&e.name).await.ok().flatten().map(|t| t.len());
        }
        let view = pages::ListView { entries: &entries, filter: &filter, page, pages, total };
        Ok(Reply::page("Repositories", "repos", pages::repo_list(&view)))
    }

    /// The repository `name` if the identity may pull it (else `None`, the
    /// same answer as for one that does not exist).
    fn visible_repo(&self, r: &Req<'_>, name: &str) -> Option<RepoName> {
        let repo: RepoName = name.parse().ok()?;
        r.cx.grant.auth.allows(&r.session.identity, Action::Pull, &repo).then_some(repo)
    }

    fn upstream_of(r: &Req<'_>, repo: &RepoName) -> Option<String> {
        r.cx.registry.cache().filter(|c| c.is_cached(repo)).map(|_| repo.first_component().to_owned())
    }

    pub(super) async fn repo_page(&self, r: &Req<'_>, name: &str) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        let storage = r.cx.registry.storage();
        let Some(tags) = r.cx.registry.tag_list(&repo).await? else { return Ok(Reply::not_found()) };
        let manifests = storage.manifest_list(&repo).await?.len();
        let total = tags.len();
        let (page, pages) = page_of(r.query.get("page"), total, TAGS_PER_PAGE);
        let activity = r.cx.registry.activity().map(|a| a.as_ref());
        let mut rows = Vec::new();
        for t in tags.iter().skip((page - 1) * TAGS_PER_PAGE).take(TAGS_PER_PAGE) {
            rows.push(model::tag_row(storage.as_ref(), activity, &repo, t).await);
        }
        let upstream = Ui::upstream_of(r, &repo);
        let view =
            pages::RepoView { repo: &repo, upstream: upstream.as_deref(), rows: &rows, page, pages, total, manifests };
        Ok(Reply::page(repo.to_string(), "repos", pages::repo_page(&view)))
    }

    pub(super) async fn image_page(&self, r: &Req<'_>, name: &str) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        let raw_ref = r.query.get("ref").unwrap_or("latest").to_owned();
        let Ok(reference) = raw_ref.parse::<Reference>() else {
            return Ok(Reply::error(
                StatusCode::BAD_REQUEST,
                "Not a tag or digest",
                &format!("{raw_ref:?} is neither a tag nor a digest."),
            ));
        };
        let Some(image) = model::image(r.cx.registry.storage().as_ref(), &repo, &reference).await? else {
            return Ok(Reply::not_found());
        };
        let authority = &r.host;
        let tag = match &reference {
            Reference::Tag(t) => Some(t.to_string()),
            Reference::Digest(_) => None,
        };
        let cached = Ui::upstream_of(r, &repo).is_some();
        let pull = pages::PullRefs {
            by_tag: tag.as_ref().map(|t| format!("{authority}/{repo}:{t}")),
            by_digest: format!("{authority}/{repo}@{}", image.digest),
            plain_http: r.scheme == "http",
            origin: cached.then(|| match &tag {
                Some(t) => format!("{repo}:{t}"),
                None => format!("{repo}@{}", image.digest),
            }),
        };
        let can_delete = self.may_delete(r, &repo);
        let view = pages::ImageView {
            repo: &repo,
            reference: &raw_ref,
            image: &image,
            pull: &pull,
            raw: r.query.flag("raw"),
            can_delete,
        };
        Ok(Reply::page(format!("{repo}:{raw_ref}"), "repos", pages::image_page(&view)))
    }

    /// Delete is offered when the policy allows it and the repository is
    /// private (cached namespaces are pull-only).
    fn may_delete(&self, r: &Req<'_>, repo: &RepoName) -> bool {
        r.cx.grant.auth.allows(&r.session.identity, Action::Delete, repo) && Ui::upstream_of(r, repo).is_none()
    }

    pub(super) async fn confirm_delete(&self, r: &Req<'_>, name: &str) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        if !self.may_delete(r, &repo) {
            return Ok(not_allowed(&r.session.identity, "delete", &repo));
        }
        let reference = r.query.get("ref").unwrap_or_default().to_owned();
        let Ok(parsed) = reference.parse::<Reference>() else { return Ok(Reply::not_found()) };
        let storage = r.cx.registry.storage();
        let mut tags_too = Vec::new();
        if let Reference::Digest(d) = &parsed {
            for t in r.cx.registry.tag_list(&repo).await?.unwrap_or_default().iter() {
                if let Ok(tag) = t.parse() {
                    if storage.tag_get(&repo, &tag).await?.as_ref() == Some(d) {
                        tags_too.push(t.clone());
                    }
                }
            }
        }
        let body = pages::confirm_delete(&repo, &reference, &self.sessions.csrf_token(&r.session), &tags_too);
        Ok(Reply::page("Delete", "repos", body))
    }

    pub(super) async fn delete(&self, r: &Req<'_>, name: &str, form: &Form) -> Result<Reply, RegistryError> {
        let Some(repo) = self.visible_repo(r, name) else { return Ok(Reply::not_found()) };
        if !self.may_delete(r, &repo) {
            return Ok(not_allowed(&r.session.identity, "delete", &repo));
        }
        let reference: Reference = form.get("ref").unwrap_or_default().parse()?;
        r.cx.registry.delete_manifest(&repo, &reference).await?;
        tracing::info!(
            user = r.session.identity.name().unwrap_or("anonymous"),
            repository = %repo, reference = %reference, "web interface: deleted"
        );
        Ok(Reply::Redirect(format!("{}?deleted={}", pages::repo_url(&repo), pages::q(&reference.to_string()))))
    }

    /// Dry runs are offered to identities the policy lets delete somewhere.
    async fn may_dry_run(&self, r: &Req<'_>) -> bool {
        let auth = &r.cx.grant.auth;
        let may = |repo: &RepoName| auth.allows(&r.session.identity, Action::Delete, repo);
        if let Some(any) = r.cx.registry.repo_index().and_then(|i| i.read(|names| names.iter().any(may))) {
            return any;
        }
        r.cx.registry.storage().repo_list().await.unwrap_or_default().iter().any(may)
    }

    pub(super) async fn dashboard(&self, r: &Req<'_>) -> Result<Reply, RegistryError> {
        let status = crate::status::status(r.cx.registry, r.cx.gc, r.cx.retention, r.cx.identity).await;
        let dry = self.may_dry_run(r).await;
        let body = dashboard::dashboard(&status, dry, &self.sessions.csrf_token(&r.session));
        Ok(Reply::page("Cache", "dashboard", body))
    }

    pub(super) async fn dry_run(&self, r: &Req<'_>, kind: &str) -> Result<Reply, RegistryError> {
        if !self.may_dry_run(r).await {
            return Ok(Reply::error(StatusCode::FORBIDDEN, "Not allowed", "Dry runs need delete permission."));
        }
        let report = match kind {
            "gc" => r.cx.gc.run(true).await.map(|x| serde_json::to_value(&x).unwrap_or_default()),
            "retention" => r.cx.retention.run(true).await.map(|x| serde_json::to_value(&x).unwrap_or_default()),
            _ => return Ok(Reply::not_found()),
        }
        .map_err(|e| RegistryError::internal(format!("{kind} dry run failed: {e}")))?;
        let auth = &r.cx.grant.auth;
        let id = &r.session.identity;
        let visible = |name: &str| name.parse::<RepoName>().is_ok_and(|n| auth.allows(id, Action::Pull, &n));
        Ok(Reply::page("Dry run", "dashboard", dashboard::dry_run_result(kind, &report, visible)))
    }
}
