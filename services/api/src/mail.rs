//! Outgoing mail (signup verification): SMTP through `lettre`, or the log for a
//! single-machine try. Sending runs in one background task behind a bounded queue, so
//! no request waits on, or learns anything from, a mail server.

use lettre::message::header::ContentTransferEncoding;
use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;
use tokio::sync::mpsc;

/// Mails waiting to be sent; more are dropped (and logged) rather than queued forever.
const QUEUE: usize = 256;
/// One delivery, connection to `QUIT`, at most.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MailConfigError {
    #[error(
        "SKYLARK_MAIL_URL: {0}; use smtp://[user:pass@]host[:port][?tls=none], smtps://… or log"
    )]
    Url(String),
    #[error("SKYLARK_MAIL_FROM {0:?}: {1}; use an address like `Skylark <no-reply@example.com>`")]
    From(String, String),
}

#[derive(Clone)]
enum Transport {
    /// Written to the log at WARN: the all-in-one's default, no mail server needed.
    Log,
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Where mail goes (`SKYLARK_MAIL_URL`) and who it is from (`SKYLARK_MAIL_FROM`).
#[derive(Clone)]
pub struct MailConfig {
    transport: Transport,
    from: Mailbox,
}

impl std::fmt::Debug for MailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The SMTP URL may carry a password: only its kind is shown.
        let kind = match self.transport {
            Transport::Log => "log",
            Transport::Smtp(_) => "smtp",
        };
        f.debug_struct("MailConfig")
            .field("transport", &kind)
            .field("from", &self.from.to_string())
            .finish()
    }
}

impl MailConfig {
    /// Parses `SKYLARK_MAIL_URL` and `SKYLARK_MAIL_FROM`. `smtp://` requires STARTTLS
    /// unless `?tls=none`; `smtps://` is TLS from the first byte.
    pub fn parse(url: &str, from: &str) -> Result<Self, MailConfigError> {
        let from_box: Mailbox = from.parse().map_err(|e: lettre::address::AddressError| {
            MailConfigError::From(from.into(), e.to_string())
        })?;
        let url = url.trim();
        let transport = if url == "log" {
            Transport::Log
        } else {
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            // lettre's own default for smtp:// is no TLS at all; ours is STARTTLS required.
            let lettre_url = match (base.split_once("://").map(|p| p.0), query) {
                (Some("smtp"), "") | (Some("smtp"), "tls=required") => {
                    format!("{base}?tls=required")
                }
                (Some("smtp"), "tls=none") => base.to_string(),
                (Some("smtps"), "") => base.to_string(),
                (Some("smtp" | "smtps"), q) => {
                    return Err(MailConfigError::Url(format!(
                        "unknown query {q:?} (only tls=none, on smtp://)"
                    )))
                }
                _ => return Err(MailConfigError::Url("unknown scheme".into())),
            };
            let smtp = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url)
                // lettre's message may quote the URL: keep the password out of it.
                .map_err(|_| MailConfigError::Url("not a valid SMTP URL".into()))?
                .timeout(Some(SEND_TIMEOUT))
                .build();
            Transport::Smtp(smtp)
        };
        Ok(Self {
            transport,
            from: from_box,
        })
    }

    /// Whether mail only goes to the log.
    pub fn is_log(&self) -> bool {
        matches!(self.transport, Transport::Log)
    }

    /// The log transport from `Skylark <no-reply@localhost>`.
    pub fn log() -> Self {
        Self::parse("log", "Skylark <no-reply@localhost>").expect("literal mail config")
    }
}

/// One plain-text mail.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: &'static str,
    pub body: String,
}

/// Hands mails to the sending task; cheap to clone.
#[derive(Clone)]
pub struct Mailer {
    tx: mpsc::Sender<Mail>,
}

impl Mailer {
    /// Starts the sending task (it ends when the last `Mailer` is dropped). Needs a Tokio
    /// runtime.
    pub fn start(config: MailConfig) -> Self {
        let (tx, mut rx) = mpsc::channel::<Mail>(QUEUE);
        tokio::spawn(async move {
            while let Some(mail) = rx.recv().await {
                deliver(&config, mail).await;
            }
        });
        Self { tx }
    }

    /// Queues `mail`; never waits. A full queue drops it: the person can ask again.
    pub fn send(&self, mail: Mail) {
        if let Err(e) = self.tx.try_send(mail) {
            metrics::counter!("skylark_api_mail_dropped_total").increment(1);
            tracing::error!(
                error = %e,
                "mail queue full or closed: mail dropped (is the SMTP server slow or down?)"
            );
        }
    }
}

async fn deliver(config: &MailConfig, mail: Mail) {
    match &config.transport {
        Transport::Log => {
            tracing::warn!(
                to = %mail.to,
                subject = mail.subject,
                "mail not sent, written here instead: set SKYLARK_MAIL_URL to an SMTP server \
                 (smtp://user:pass@host:587) to send it\n----\n{}\n----",
                mail.body
            );
        }
        Transport::Smtp(smtp) => {
            let outcome = match message(&config.from, &mail) {
                Ok(m) => match tokio::time::timeout(SEND_TIMEOUT, smtp.send(m)).await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer in {} s", SEND_TIMEOUT.as_secs())),
                },
                Err(e) => Err(e),
            };
            // The body holds a sign-up link: never logged in this mode.
            match outcome {
                Ok(()) => {
                    metrics::counter!("skylark_api_mail_sent_total").increment(1);
                    tracing::info!(subject = mail.subject, "mail sent");
                }
                Err(e) => {
                    metrics::counter!("skylark_api_mail_failed_total").increment(1);
                    tracing::error!(error = %e, subject = mail.subject, "sending mail failed: check SKYLARK_MAIL_URL and the SMTP server");
                }
            }
        }
    }
}

fn message(from: &Mailbox, mail: &Mail) -> Result<Message, String> {
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| format!("recipient address: {e}"))?;
    // 7bit as RFC 5322 allows it (ASCII, lines up to 998): lettre's chooser would
    // quoted-printable any line over 76 and break the link over two lines.
    if !mail.body.is_ascii() || mail.body.lines().any(|l| l.len() > 998) {
        return Err("mail body is not 7-bit text".into());
    }
    let crlf = mail.body.replace("\r\n", "\n").replace('\n', "\r\n");
    let body = Body::dangerous_pre_encoded(crlf.into_bytes(), ContentTransferEncoding::SevenBit);
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject)
        .header(lettre::message::header::ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| format!("building the mail: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_starttls_by_default() {
        for ok in [
            "log",
            "smtp://mail.example.com",
            "smtp://u:p%40ss@mail.example.com:587",
            "smtp://127.0.0.1:2525?tls=none",
            "smtps://u:p@mail.example.com",
        ] {
            assert!(
                MailConfig::parse(ok, "Skylark <a@b.example>").is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "http://x",
            "smtp://x?tls=opportunistic",
            "smtps://x?tls=none",
            "",
        ] {
            assert!(MailConfig::parse(bad, "a@b.example").is_err(), "{bad}");
        }
        assert!(MailConfig::parse("log", "not an address").is_err());
        let c = MailConfig::parse("smtp://u:secret@h", "a@b.example").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }
}
