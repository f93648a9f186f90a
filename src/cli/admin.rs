//! The admin API as the command line reaches it (`switchboard dial`, `switchboard campaign run`):
//! the running appliance's address and token from the same config, and requests that say plainly
//! when the appliance cannot be reached.

use switchboard::config::LoadedConfig;

pub struct Admin {
    pub base: String,
    token: Option<String>,
    client: reqwest::Client,
}

/// An answer of the admin API: its status, its body as JSON (`Null` when it is not), and as text.
pub struct Reply {
    pub status: reqwest::StatusCode,
    pub json: serde_json::Value,
    pub text: String,
}

impl Admin {
    /// `http`: the appliance's HTTP address (default: the config's http.listen). A token the
    /// config names but this environment lacks is left out (the appliance then says 401).
    pub fn new(loaded: &LoadedConfig, http: Option<std::net::SocketAddr>) -> Admin {
        let http = http.unwrap_or(loaded.config.http.listen);
        let host = if http.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            switchboard::sip::endpoint::bracket_host(&http.ip().to_string())
        };
        let token = switchboard::server::admin_token(loaded).ok().flatten();
        Admin { base: format!("http://{host}:{}", http.port()), token, client: reqwest::Client::new() }
    }

    /// POST JSON; Err only when the appliance cannot be reached.
    pub async fn post(&self, path: &str, body: &serde_json::Value) -> Result<Reply, String> {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("cannot reach the appliance at {} (is `switchboard run` up?): {e}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Ok(Reply { status, json: serde_json::from_str(&text).unwrap_or_default(), text })
    }

    /// GET a JSON document; Err when the appliance cannot be reached.
    pub async fn get(&self, path: &str) -> Result<serde_json::Value, String> {
        let resp = self.client.get(format!("{}{path}", self.base)).send().await.map_err(|e| e.to_string())?;
        Ok(resp.json().await.unwrap_or_default())
    }
}

/// A runtime for one command's requests.
pub fn runtime() -> Result<tokio::runtime::Runtime, std::process::ExitCode> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| {
        eprintln!("error: cannot start the async runtime: {e}");
        std::process::ExitCode::FAILURE
    })
}
