//! HTTP over the daemon's Unix socket, for the CLI and tests.

use std::path::Path;

use anyhow::{bail, Context};
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Request};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// A response: status code, body, and the daemon's own time for it.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
    /// The daemon's time from the request read to the response made, in milliseconds
    /// (its `Server-Timing: app;dur=...` header).
    pub server_ms: Option<f64>,
    /// The phases of that time the handler reported, in order (the header's other
    /// metrics: `parse`, `plan`, `kernel`, `journal`, ...), in milliseconds.
    pub server_phases: Vec<(String, f64)>,
}

impl Reply {
    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.body)
            .with_context(|| format!("daemon sent non-JSON: {}", self.body))
    }
    /// Fails with the daemon's error message unless the status is 2xx.
    pub fn ok(self) -> anyhow::Result<Reply> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let msg = serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(self.body.clone());
        bail!("daemon answered {}: {}", self.status, msg)
    }
}

/// Sends one request over the socket.
pub async fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<Reply> {
    let stream = UnixStream::connect(socket).await.with_context(|| {
        format!("cannot reach the daemon at {} (is `statewall daemon` running? --socket selects another)", socket.display())
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "statewall");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let res = sender.send_request(req).await?;
    let status = res.status().as_u16();
    let timing: Vec<(String, f64)> = res
        .headers()
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .map(server_timing)
        .unwrap_or_default();
    let server_ms = timing
        .first()
        .filter(|(n, _)| n == "app")
        .map(|(_, ms)| *ms);
    let server_phases = timing.into_iter().skip(1).collect();
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        server_ms,
        server_phases,
    })
}

/// The metrics of a `Server-Timing` header (`name;dur=MS, ...`) that carry a duration.
fn server_timing(v: &str) -> Vec<(String, f64)> {
    v.split(',')
        .filter_map(|m| {
            let mut parts = m.split(';').map(str::trim);
            let name = parts.next()?.to_string();
            let ms = parts.find_map(|p| p.strip_prefix("dur="))?.parse().ok()?;
            Some((name, ms))
        })
        .collect()
}

/// Blocking wrapper, for tests and simple tools.
pub fn request_blocking(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<String>,
) -> anyhow::Result<Reply> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(request(socket, method, path, body))
}

/// Streams a GET response line by line (server-sent events) until the daemon ends it.
pub async fn stream_lines(
    socket: &Path,
    path: &str,
    mut each: impl FnMut(&str),
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .with_context(|| format!("cannot reach the daemon at {}", socket.display()))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method("GET")
        .uri(path)
        .header("host", "statewall")
        .body(Full::new(Bytes::new()))?;
    let mut res = sender.send_request(req).await?;
    if !res.status().is_success() {
        bail!("daemon answered {}", res.status());
    }
    let mut buf = Vec::new();
    while let Some(frame) = res.body_mut().frame().await {
        if let Some(data) = frame?.data_ref() {
            buf.extend_from_slice(data);
            while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                each(String::from_utf8_lossy(&line).trim_end());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_timing_reads_every_metric_with_a_duration() {
        let v = "app;dur=1.500, parse;dur=0.25,kernel;desc=\"x\";dur=1, cache, bad;dur=x";
        assert_eq!(
            server_timing(v),
            vec![
                ("app".to_string(), 1.5),
                ("parse".to_string(), 0.25),
                ("kernel".to_string(), 1.0)
            ]
        );
        assert!(server_timing("").is_empty());
    }
}
