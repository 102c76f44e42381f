//! The pages a person sees: one per outcome, each a title, a text and a
//! button label from a minijinja template (built in, or from `--pages DIR`),
//! set in one fixed layout whose only style and script are allowed by their
//! hashes in the Content-Security-Policy.
//!
//! A template is three blocks: `{% block title %}`, `{% block text %}` (HTML)
//! and `{% block button %}`; a block a template leaves out comes from the
//! built-in page. Variables: `contact` (`--contact`), `campaign`,
//! `retry_seconds`. Nothing the API said ever reaches a page.

use std::path::Path;

use anyhow::Context as _;
use axum::http::StatusCode;
use base64::Engine as _;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde::Serialize;

/// Seconds the busy page waits before it tries again by itself.
pub(crate) const RETRY_SECONDS: u32 = 5;

/// The layout's whole style, allowed by its hash.
const STYLE: &str =
    "body{font-family:system-ui,sans-serif;background:#f4f5f7;color:#1d2430;margin:0}\
main{max-width:32rem;margin:12vh auto;padding:2rem;background:#fff;border-radius:12px;\
box-shadow:0 1px 4px rgba(0,0,0,.12)}h1{font-size:1.4rem;margin-top:0}\
button{font-size:1.1rem;padding:.7rem 1.6rem;border:0;border-radius:8px;background:#1a5fd0;\
color:#fff;cursor:pointer}";

/// The busy page's script: submit the form again after [`RETRY_SECONDS`].
const SCRIPT: &str = "setTimeout(function(){document.forms[0].submit()},5000);";

/// Each page, its template's file name, its status and whether it has a
/// button that POSTs back to the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// A valid link, shown on GET: the button signs the person in.
    Open,
    /// 410: the link is past its expiry.
    Expired,
    /// 404: altered, of another secret, or no link at all.
    Invalid,
    /// 503: the budget is spent for now; the page tries again by itself.
    Busy,
    /// 502: the API failed.
    Failed,
    /// 503: this client has clicked too often.
    Limited,
}

impl Page {
    const ALL: [Page; 6] = [
        Page::Open,
        Page::Expired,
        Page::Invalid,
        Page::Busy,
        Page::Failed,
        Page::Limited,
    ];

    fn file(self) -> &'static str {
        match self {
            Page::Open => "open.html",
            Page::Expired => "expired.html",
            Page::Invalid => "invalid.html",
            Page::Busy => "busy.html",
            Page::Failed => "failed.html",
            Page::Limited => "limited.html",
        }
    }

    /// The HTTP status the page is sent with.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            Page::Open => StatusCode::OK,
            Page::Expired => StatusCode::GONE,
            Page::Invalid => StatusCode::NOT_FOUND,
            Page::Busy | Page::Limited => StatusCode::SERVICE_UNAVAILABLE,
            Page::Failed => StatusCode::BAD_GATEWAY,
        }
    }

    fn has_button(self) -> bool {
        matches!(self, Page::Open | Page::Busy | Page::Failed | Page::Limited)
    }

    fn builtin(self) -> &'static str {
        match self {
            Page::Open => {
                "{% block title %}Sign in to your portal{% endblock %}\
                 {% block text %}<p>Press the button to sign in. The link is yours alone: \
                 please do not forward it.</p>{% endblock %}\
                 {% block button %}Sign in{% endblock %}"
            }
            Page::Expired => {
                "{% block title %}This link has expired{% endblock %}\
                 {% block text %}<p>The link you followed is no longer valid. For a new \
                 one, please ask {{ contact }}.</p>{% endblock %}"
            }
            Page::Invalid => {
                "{% block title %}This link is not valid{% endblock %}\
                 {% block text %}<p>The link may have been cut short or changed. Please \
                 open it again from the message you received, whole.</p>{% endblock %}"
            }
            Page::Busy => {
                "{% block title %}Just a moment{% endblock %}\
                 {% block text %}<p>Many people are signing in right now. This page tries \
                 again by itself in {{ retry_seconds }} seconds.</p>{% endblock %}\
                 {% block button %}Try again now{% endblock %}"
            }
            Page::Failed => {
                "{% block title %}Sign-in is not available right now{% endblock %}\
                 {% block text %}<p>We could not reach the portal's sign-in service. \
                 Please try again in a few minutes.</p>{% endblock %}\
                 {% block button %}Try again{% endblock %}"
            }
            Page::Limited => {
                "{% block title %}Too many attempts{% endblock %}\
                 {% block text %}<p>There were many sign-in attempts from your network \
                 just now. Please wait a minute, then try again.</p>{% endblock %}\
                 {% block button %}Try again{% endblock %}"
            }
        }
    }
}

/// What a template may use.
#[derive(Debug, Serialize)]
struct Vars<'a> {
    contact: &'a str,
    campaign: &'a str,
    retry_seconds: u32,
}

/// The loaded templates and the page headers that go with them.
pub(crate) struct Pages {
    env: Environment<'static>,
    contact: String,
    csp: String,
}

impl Pages {
    /// Loads the built-in pages, then any of `dir`'s files over them; a
    /// template that does not parse stops the service before it listens.
    /// `portal_origin` is where the button's POST may be redirected.
    pub(crate) fn load(
        dir: Option<&Path>,
        contact: &str,
        portal_origin: &str,
    ) -> anyhow::Result<Pages> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        for page in Page::ALL {
            env.add_template_owned(builtin_name(page), page.builtin())
                .expect("the built-in pages parse");
            let Some(dir) = dir else { continue };
            let path = dir.join(page.file());
            match std::fs::read_to_string(&path) {
                Ok(source) => env
                    .add_template_owned(page.file(), source)
                    .map_err(|e| anyhow::anyhow!("page template {}: {e}", path.display()))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        }
        let pages = Pages {
            env,
            contact: contact.to_owned(),
            csp: format!(
                "default-src 'none'; style-src '{}'; script-src '{}'; form-action 'self' {}; \
                 base-uri 'none'; frame-ancestors 'none'",
                hash(STYLE),
                hash(SCRIPT),
                portal_origin
            ),
        };
        // Every page renders now, with its blocks, or the service does not start.
        for page in Page::ALL {
            pages
                .try_render(page, "campaign")
                .with_context(|| format!("page template {}", page.file()))?;
        }
        Ok(pages)
    }

    /// The Content-Security-Policy every answer carries.
    pub(crate) fn csp(&self) -> &str {
        &self.csp
    }

    /// The page's HTML. A template that fails at this point (it rendered at
    /// start) falls back to the built-in page.
    pub(crate) fn render(&self, page: Page, campaign: &str) -> String {
        self.try_render(page, campaign).unwrap_or_else(|e| {
            tracing::warn!(
                "page template {} failed: {e}; the built-in page is shown",
                page.file()
            );
            self.layout(page, |block| {
                self.block(&builtin_name(page), block, campaign)
            })
            .expect("the built-in pages render")
        })
    }

    fn try_render(&self, page: Page, campaign: &str) -> Result<String, minijinja::Error> {
        let own = self.env.get_template(page.file()).is_ok();
        self.layout(page, |block| {
            let builtin = || self.block(&builtin_name(page), block, campaign);
            match own {
                true => match self.block(page.file(), block, campaign) {
                    Err(e) if e.kind() == minijinja::ErrorKind::UnknownBlock => builtin(),
                    other => other,
                },
                false => builtin(),
            }
        })
    }

    fn block(&self, name: &str, block: &str, campaign: &str) -> Result<String, minijinja::Error> {
        let vars = Vars {
            contact: &self.contact,
            campaign,
            retry_seconds: RETRY_SECONDS,
        };
        let template = self.env.get_template(name)?;
        template
            .render_captured(&vars)?
            .with_state_mut(|state| state.render_block(block))
    }

    fn layout(
        &self,
        page: Page,
        block: impl Fn(&str) -> Result<String, minijinja::Error>,
    ) -> Result<String, minijinja::Error> {
        let title = block("title")?;
        let text = block("text")?;
        let form = match page.has_button() {
            true => format!(
                "<form method=\"post\"><button type=\"submit\">{}</button></form>",
                block("button")?
            ),
            false => String::new(),
        };
        let script = match page {
            Page::Busy => format!("<script>{SCRIPT}</script>"),
            _ => String::new(),
        };
        Ok(format!(
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <meta name=\"robots\" content=\"noindex, nofollow\">\
             <title>{title}</title><style>{STYLE}</style></head>\
             <body><main><h1>{title}</h1>{text}{form}</main>{script}</body></html>\n"
        ))
    }
}

fn builtin_name(page: Page) -> String {
    format!("builtin/{}", page.file())
}

/// A CSP source for an inline element's exact text.
fn hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_page_renders_with_its_button_only_where_it_posts_back() {
        let pages =
            Pages::load(None, "Acme <help@acme.example>", "https://portal.example").unwrap();
        for page in Page::ALL {
            let html = pages.render(page, "march");
            assert!(html.contains("<h1>"), "{html}");
            assert_eq!(html.contains("<form method=\"post\">"), page.has_button());
            assert_eq!(html.contains("<script>"), page == Page::Busy);
        }
        let expired = pages.render(Page::Expired, "march");
        assert!(
            expired.contains("Acme &lt;help@acme.example&gt;"),
            "{expired}"
        );
        assert!(pages
            .csp()
            .contains("form-action 'self' https://portal.example"));
        assert!(pages.csp().contains(&hash(SCRIPT)));
    }

    #[test]
    fn a_folder_template_replaces_the_blocks_it_has() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("open.html"),
            "{% block title %}Welcome to {{ campaign }}{% endblock %}{% block button %}Go{% endblock %}",
        )
        .unwrap();
        let pages = Pages::load(Some(dir.path()), "us", "https://p.example").unwrap();
        let html = pages.render(Page::Open, "<b>spring</b>");
        assert!(
            html.contains("<h1>Welcome to &lt;b&gt;spring&lt;&#x2f;b&gt;</h1>"),
            "{html}"
        );
        assert!(html.contains(">Go</button>"), "{html}");
        assert!(
            html.contains("do not forward"),
            "the built-in text stays: {html}"
        );

        std::fs::write(
            dir.path().join("busy.html"),
            "{% block title %}{{ nope }}{% endblock %}",
        )
        .unwrap();
        let error = Pages::load(Some(dir.path()), "us", "https://p.example")
            .err()
            .unwrap();
        assert!(format!("{error:#}").contains("busy.html"), "{error:#}");
    }
}
