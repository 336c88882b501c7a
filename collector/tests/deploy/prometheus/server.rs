//! Debian's Prometheus run for the query tests, and its HTTP API.

use super::*;

/// Debian's Prometheus inside a test namespace, on its own port, scraping
/// with one overlay's configuration; killed on drop (also when the test
/// panics), its storage in a temporary directory.
pub(super) struct PrometheusServer<'a> {
    child: Child,
    dir: tempfile::TempDir,
    ns: &'a Netns,
    port: u16,
    /// The overlay whose PodMonitor it scrapes with, for messages.
    pub(super) overlay: String,
}

impl<'a> PrometheusServer<'a> {
    pub(super) fn start(
        ns: &'a Netns,
        overlay: &str,
        port: u16,
        config: &Value,
        rules: &Value,
    ) -> PrometheusServer<'a> {
        let dir = tempfile::tempdir().unwrap();
        let rules_path = dir.path().join("rules.json");
        std::fs::write(&rules_path, serde_json::to_vec(rules).unwrap()).unwrap();
        let mut config = config.clone();
        config["rule_files"] = json!([rules_path]);
        // JSON is YAML: Prometheus reads it as its configuration.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "REQUIRED TOOL MISSING: prometheus ({e}); install: {}",
                    install_hint("prometheus")
                )
            });
        let server = PrometheusServer {
            child,
            dir,
            ns,
            port,
            overlay: overlay.to_string(),
        };
        wait_for_http_ok(ns, port, "/-/ready", || {
            format!("Prometheus not ready: {}", server.log())
        });
        server
    }

    pub(super) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET on the HTTP API; the `data` of a successful answer.
    pub(super) fn api(&self, path: &str) -> Value {
        let (status, body) = http(self.ns, self.port, "GET", path)
            .unwrap_or_else(|| panic!("{}: no answer from Prometheus for {path}", self.overlay));
        let answer: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert!(
            status == 200 && answer["status"] == "success",
            "{}: {path}: HTTP {status}: {answer}",
            self.overlay
        );
        answer["data"].clone()
    }

    pub(super) fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)));
        data["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{expr}: scalar/string result {data}"))
            .clone()
    }

    pub(super) fn range_query(&self, expr: &str) -> Vec<Value> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={now}&step=1",
            url_encode(expr),
            now - 30
        );
        self.api(&path)["result"].as_array().unwrap().clone()
    }

    pub(super) fn wait_for(&self, expr: &str, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.query(expr).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{}: timed out waiting for {what} ({expr}); Prometheus log: {}",
                self.overlay,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for PrometheusServer<'_> {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

pub(super) fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
