//! A small blocking client of the host's HTTP API.

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::ApiArgs;
use crate::ModuleInfo;

pub(crate) struct Api {
    base: String,
    agent: ureq::Agent,
    token: Option<String>,
}

fn describe(addr: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(code, resp) => {
            let body = resp.into_string().unwrap_or_default();
            let msg = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(body);
            if code == 401 {
                anyhow::anyhow!(
                    "host answered 401: {msg} (pass --token or set SLUICE_API_TOKEN; a host that generated its token keeps it in <data-dir>/api-token)"
                )
            } else {
                anyhow::anyhow!("host answered {code}: {msg}")
            }
        }
        ureq::Error::Transport(t) => anyhow::anyhow!(
            "cannot reach the sluice host at {addr}: {t} (is `sluice run` running? set --addr or SLUICE_ADDR)"
        ),
    }
}

impl Api {
    /// A client of the host at `args.addr`, sending `args.token` (if not
    /// blank) with every request that changes something.
    pub(crate) fn new(args: &ApiArgs) -> Api {
        Api {
            base: args.addr.trim_end_matches('/').to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(60))
                .build(),
            token: args.token.clone().filter(|t| !t.trim().is_empty()),
        }
    }

    /// `req` with the bearer token, if there is one.
    fn authed(&self, req: ureq::Request) -> ureq::Request {
        match &self.token {
            Some(t) => req.set("Authorization", &format!("Bearer {}", t.trim())),
            None => req,
        }
    }

    /// DELETE `path` and return the JSON answer.
    pub(crate) fn delete(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .authed(self.agent.delete(&url))
            .call()
            .map_err(|e| describe(&self.base, e))?;
        resp.into_json()
            .with_context(|| format!("bad response from {url}"))
    }

    pub(crate) fn get(&self, path: &str) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .authed(self.agent.get(&url))
            .call()
            .map_err(|e| describe(&self.base, e))?;
        resp.into_json()
            .with_context(|| format!("bad response from {url}"))
    }

    /// Append `events`; `lines` are their source line numbers, for errors.
    pub(crate) fn produce(
        &self,
        topic: &str,
        events: &[Value],
        what: &str,
        lines: &[usize],
    ) -> anyhow::Result<usize> {
        let url = format!("{}/v1/topics/{topic}/events", self.base);
        match self
            .authed(self.agent.post(&url))
            .send_json(Value::Array(events.to_vec()))
        {
            Ok(resp) => {
                let v: Value = resp.into_json()?;
                Ok(v["accepted"].as_u64().unwrap_or(0) as usize)
            }
            Err(ureq::Error::Status(code, resp)) => {
                let v: Value = resp.into_json().unwrap_or_default();
                let msg = v["error"].as_str().unwrap_or("request refused").to_string();
                match v["index"].as_u64().and_then(|i| lines.get(i as usize)) {
                    Some(line) => bail!(
                        "{what}:{line}: {msg} (host answered {code}; events before this line were produced)"
                    ),
                    None => bail!("{msg} (host answered {code})"),
                }
            }
            Err(e) => Err(describe(&self.base, e)),
        }
    }

    /// `(partition, first, end)` of each partition of `topic`.
    pub(crate) fn topic(&self, topic: &str) -> anyhow::Result<Vec<(u32, u64, u64)>> {
        let all = self.get("/v1/topics")?;
        let Some(t) = all
            .as_array()
            .and_then(|a| a.iter().find(|t| t["name"] == topic))
        else {
            bail!("the host has no topic `{topic}`");
        };
        Ok(t["partitions"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        (
                            p["partition"].as_u64().unwrap_or(0) as u32,
                            p["first"].as_u64().unwrap_or(0),
                            p["end"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Events of one partition from `from`, and the next offset to read.
    pub(crate) fn read(
        &self,
        topic: &str,
        p: u32,
        from: u64,
        limit: usize,
        wait_ms: u64,
    ) -> anyhow::Result<(Vec<Value>, u64)> {
        let v = self.get(&format!(
            "/v1/topics/{topic}/partitions/{p}/events?from={from}&limit={limit}&wait_ms={wait_ms}"
        ))?;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        Ok((events, v["next"].as_u64().unwrap_or(from)))
    }

    /// POST `body` (JSON, or nothing) to `path` and return the JSON answer.
    pub(crate) fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let req = self.authed(self.agent.post(&url));
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        }
        .map_err(|e| describe(&self.base, e))?;
        resp.into_json()
            .with_context(|| format!("bad response from {url}"))
    }

    pub(crate) fn dlq_summary(&self, module: &str) -> anyhow::Result<crate::dlq::Summary> {
        let v = self.get(&format!("/v1/modules/{module}/dlq"))?;
        serde_json::from_value(v).context("bad dead-letter summary from the host")
    }

    /// Dead letters of `module` (of one event id if given), at most `limit`.
    pub(crate) fn dlq_events(
        &self,
        module: &str,
        id: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Vec<Value>> {
        let mut path = format!("/v1/modules/{module}/dlq/events?limit={limit}");
        if let Some(id) = id {
            path.push_str("&id=");
            path.push_str(&encode_query(id));
        }
        let v = self.get(&path)?;
        Ok(v["events"].as_array().cloned().unwrap_or_default())
    }

    pub(crate) fn status(&self) -> anyhow::Result<Value> {
        self.get("/v1/status")
    }

    pub(crate) fn modules(&self) -> anyhow::Result<Vec<ModuleInfo>> {
        let v = self.get("/v1/modules")?;
        serde_json::from_value(v).context("bad module list from the host")
    }
}

/// Percent-encode a query parameter value.
fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
