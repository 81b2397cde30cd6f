//! A minimal SMTP server for tests: accepts every mail without TLS or auth and hands
//! each one (recipients and raw message) to the test, so the API's real SMTP client
//! path is what delivers it.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub struct SinkMail {
    pub to: Vec<String>,
    /// The message as received (headers and body), dot-stuffing undone.
    pub data: String,
}

pub struct SmtpSink {
    /// `smtp://127.0.0.1:PORT?tls=none`, for `SKYLARK_MAIL_URL`.
    pub url: String,
    rx: mpsc::UnboundedReceiver<SinkMail>,
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "smtp://127.0.0.1:{}?tls=none",
            listener.local_addr().unwrap().port()
        );
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let _ = session(sock, tx).await;
                });
            }
        });
        SmtpSink { url, rx }
    }

    /// The next mail delivered, within 10 s.
    pub async fn next(&mut self) -> SinkMail {
        tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
            .await
            .expect("no mail within 10 s")
            .expect("sink stopped")
    }

    /// Asserts no mail arrives within `wait`.
    pub async fn none_within(&mut self, wait: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(wait, self.rx.recv()).await {
            panic!("unexpected mail to {:?}:\n{}", m.to, m.data);
        }
    }
}

async fn session(
    sock: tokio::net::TcpStream,
    tx: mpsc::UnboundedSender<SinkMail>,
) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"220 sink ESMTP\r\n").await?;
    let mut to = Vec::new();
    while let Some(line) = lines.next_line().await? {
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 sink\r\n",
            "MAIL" => {
                to.clear();
                b"250 OK\r\n"
            }
            "RCPT" => {
                let addr = line
                    .split_once(':')
                    .map(|(_, a)| a.trim().trim_matches(['<', '>']).to_string())
                    .unwrap_or_default();
                to.push(addr);
                b"250 OK\r\n"
            }
            "DATA" => {
                w.write_all(b"354 end with .\r\n").await?;
                let mut data = String::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    data.push('\n');
                }
                let _ = tx.send(SinkMail {
                    to: std::mem::take(&mut to),
                    data,
                });
                b"250 OK queued\r\n"
            }
            "QUIT" => {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            _ => b"250 OK\r\n",
        };
        w.write_all(reply).await?;
    }
    Ok(())
}
