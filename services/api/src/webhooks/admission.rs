//! The operator's admission hook (as SRS `on_publish`): before a publish is accepted,
//! POST `{room, protocol, client_ip}` signed like webhooks; 2xx allows, 403 denies,
//! anything else (no answer in time, an error, another status) means the configured
//! default.

use super::{signed_post, AdmissionConfig};
use serde_json::{json, Value};

/// What the hook decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Allow,
    /// Refused by the hook (403), or by the default when it could not answer.
    Deny(String),
}

pub(crate) struct Admission {
    config: AdmissionConfig,
    secret: String,
    client: reqwest::Client,
}

impl Admission {
    pub(crate) fn new(config: AdmissionConfig, secret: String) -> Self {
        Self {
            config,
            secret,
            client: super::http_client(false),
        }
    }

    pub(crate) async fn decide(&self, room: Value, protocol: &str, client_ip: &str) -> Decision {
        let body = json!({
            "room": room,
            "protocol": Some(protocol).filter(|p| !p.is_empty()),
            "client_ip": Some(client_ip).filter(|p| !p.is_empty()),
        })
        .to_string();
        let req = signed_post(&self.client, &self.config.url, &self.secret, body)
            .header("Skylark-Event-Type", "publish.admission")
            .timeout(self.config.timeout)
            .send();
        let why = match req.await {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("skylark_admission_total", "result" => "allow").increment(1);
                return Decision::Allow;
            }
            Ok(r) if r.status() == reqwest::StatusCode::FORBIDDEN => {
                metrics::counter!("skylark_admission_total", "result" => "deny").increment(1);
                return Decision::Deny(
                    "the operator's admission hook refused this publish: contact the operator"
                        .into(),
                );
            }
            Ok(r) => format!("answered {}", r.status()),
            Err(e) if e.is_timeout() => format!("no answer within {:?}", self.config.timeout),
            Err(e) => e.to_string(),
        };
        metrics::counter!("skylark_admission_total", "result" => "default").increment(1);
        tracing::warn!(url = %self.config.url, error = %why, allow = self.config.default_allow,
            "admission hook unavailable: applying SKYLARK_ADMISSION_DEFAULT");
        if self.config.default_allow {
            Decision::Allow
        } else {
            Decision::Deny(
                "the operator's admission check is unavailable and publishing is refused meanwhile: retry shortly".into(),
            )
        }
    }
}
