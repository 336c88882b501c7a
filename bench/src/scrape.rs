//! The scraper (one HTTP/1.0 GET per scrape, a new TCP connection each
//! time) and latency statistics. Measured scrapes ask as Prometheus does:
//! its Accept header and `Accept-Encoding: gzip`; the bench's own checks
//! ask for plain text, as `curl` would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub struct Response {
    pub status: u16,
    /// The body as text (decompressed when it came gzip-encoded).
    pub body: Vec<u8>,
    /// Body bytes as they crossed the connection.
    pub wire_bytes: usize,
    pub elapsed: Duration,
}

/// Prometheus 2.42's scrape Accept header (scrape/scrape.go).
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// GET `path` as plain text from 127.0.0.1:`port` of the calling thread's
/// namespace; the time runs from connect to the last byte of the body.
pub fn get(port: u16, path: &str, timeout: Duration) -> Result<Response> {
    request(port, path, timeout, "Accept: text/plain\r\n")
}

/// GET `path` with the headers Prometheus sends on every scrape; the time
/// includes decompressing, as it does for Prometheus.
pub fn get_as_prometheus(port: u16, path: &str, timeout: Duration) -> Result<Response> {
    let headers = format!("Accept: {PROMETHEUS_ACCEPT}\r\nAccept-Encoding: gzip\r\n");
    request(port, path, timeout, &headers)
}

fn request(port: u16, path: &str, timeout: Duration, headers: &str) -> Result<Response> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{headers}\r\n"
    )?;
    let mut raw = Vec::with_capacity(1 << 20);
    stream.read_to_end(&mut raw)?;
    // The scrape ends at the last byte; decompressing the body for the
    // checks is this client's work, not the tool's.
    let elapsed = start.elapsed();
    let header_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of HTTP headers")?;
    let gzipped = String::from_utf8_lossy(&raw[..header_end])
        .to_ascii_lowercase()
        .lines()
        .any(|l| l.starts_with("content-encoding:") && l.contains("gzip"));
    let status_line = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut body = raw.split_off(header_end + 4);
    let wire_bytes = body.len();
    if gzipped {
        let mut text = Vec::with_capacity(wire_bytes * 8);
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut text)
            .context("decompressing a gzip body")?;
        body = text;
    }
    if body.is_empty() && status == 200 {
        bail!("empty body");
    }
    body.shrink_to_fit();
    Ok(Response {
        status,
        body,
        wire_bytes,
        elapsed,
    })
}

/// Latency summary of a series, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(samples: &[Duration]) -> Latency {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        if ms.is_empty() {
            return Latency::default();
        }
        Latency {
            n: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p90_ms: percentile(&ms, 90.0),
            p99_ms: percentile(&ms, 99.0),
            min_ms: ms[0],
            max_ms: ms[ms.len() - 1],
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
        }
    }
}

/// Nearest-rank percentile of sorted values (p99 of fewer than 100 samples
/// is the maximum).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Median (mean of the two middle values for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 99.0), 5.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn latency_summary_in_milliseconds() {
        let samples: Vec<Duration> = (1..=4).map(Duration::from_millis).collect();
        let latency = Latency::of(&samples);
        assert_eq!(latency.n, 4);
        assert_eq!(latency.p50_ms, 2.0);
        assert_eq!(latency.max_ms, 4.0);
        assert!((latency.mean_ms - 2.5).abs() < 1e-9);
    }
}
