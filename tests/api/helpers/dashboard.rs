//! A signed-in operator on the web dashboard, as a browser would be: cookies kept by hand (the
//! gateway's public URL is https, so its cookies are `Secure`, which reqwest would not send over the
//! test's plain http), forms posted with this gateway's `Origin`.

use super::*;
use std::collections::BTreeMap;

/// An answer: status, headers, body.
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The value of the hidden `name` field of the first form that has one.
    pub fn hidden(&self, name: &str) -> String {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.body.find(&marker).expect("the hidden field") + marker.len();
        let len = self.body[start..].find('"').expect("the field's end");
        self.body[start..start + len].to_owned()
    }
}

/// A browser's cookie jar and the gateway it talks to.
pub struct Dashboard<'a> {
    pub app: &'a TestApp,
    pub cookies: BTreeMap<String, String>,
}

impl<'a> Dashboard<'a> {
    pub fn new(app: &'a TestApp) -> Dashboard<'a> {
        Dashboard {
            app,
            cookies: BTreeMap::new(),
        }
    }

    /// Signed in with `key` (asserting it worked).
    pub async fn signed_in(app: &'a TestApp) -> Dashboard<'a> {
        let mut d = Dashboard::new(app);
        let answer = d.sign_in(ADMIN_KEY).await;
        assert_eq!(answer.status, 303, "{}", answer.body);
        d
    }

    /// Opens the sign-in form and posts `key` with it.
    pub async fn sign_in(&mut self, key: &str) -> Page {
        let form = self.get("/admin/ui/login").await;
        assert_eq!(form.status, 200);
        let csrf = form.hidden("csrf");
        self.post("/admin/ui/login", &[("key", key), ("csrf", &csrf)])
            .await
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, headers: &reqwest::header::HeaderMap) {
        for set in headers.get_all("set-cookie") {
            let set = set.to_str().expect("ascii cookie");
            let pair = set.split(';').next().unwrap_or_default();
            let (name, value) = pair.split_once('=').expect("name=value");
            if value.is_empty() || set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    async fn answer(&mut self, response: reqwest::Response) -> Page {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        self.keep_cookies(&headers);
        Page {
            status,
            headers,
            body: response.text().await.expect("a body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let response = self
            .app
            .client
            .get(self.app.url(path))
            .header("Cookie", self.cookie_header())
            .send()
            .await
            .expect("the gateway answers");
        self.answer(response).await
    }

    /// Posts a form as the dashboard's own page would (this gateway's `Origin`).
    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.post_from(path, form, &self.app.address.clone()).await
    }

    /// Posts a form as a page of `origin` would.
    pub async fn post_from(&mut self, path: &str, form: &[(&str, &str)], origin: &str) -> Page {
        let response = self
            .app
            .client
            .post(self.app.url(path))
            .header("Cookie", self.cookie_header())
            .header("Origin", origin)
            .form(form)
            .send()
            .await
            .expect("the gateway answers");
        self.answer(response).await
    }

    /// The CSRF token of the signed-in session's forms (from the sign-out form on any page).
    pub async fn csrf(&mut self) -> String {
        self.get("/admin/ui/messages").await.hidden("csrf")
    }
}
