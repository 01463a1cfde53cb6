//! `agentpool operator`: the WorkerPool operator. It reconciles the WorkerPools of its
//! namespace (leader-elected among its replicas), asks each pool's server for queue
//! statistics and drains with the pool's own worker token, and serves its metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentpool_client::{Client, ClientConfig};
use agentpool_kube::pool::{Connect, Metrics, OperatorConfig, QueueApi, run_operator};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::Settings;
use crate::exit::{Exit, ExitCode};

#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Namespace whose WorkerPools to manage [default: the pod's own, or the kubeconfig's]
    #[arg(long, env = "AGENTPOOL_NAMESPACE")]
    pub namespace: Option<String>,
    /// This replica's identity in the leader Lease [default: the host name (the pod name)]
    #[arg(long, env = "AGENTPOOL_OPERATOR_ID")]
    pub id: Option<String>,
    /// Name of the leader-election Lease
    #[arg(long, env = "AGENTPOOL_OPERATOR_LEASE", default_value = "agentpool-operator")]
    pub lease: String,
    /// Seconds a leader's Lease lasts unrenewed before another replica takes over
    #[arg(long, env = "AGENTPOOL_OPERATOR_LEASE_SECS", default_value_t = 15)]
    pub lease_secs: u64,
    /// Seconds between looks at a pool when nothing changes (the queue changes silently)
    #[arg(long, env = "AGENTPOOL_OPERATOR_INTERVAL_SECS", default_value_t = 15)]
    pub interval_secs: u64,
    /// Address for /metrics and /healthz
    #[arg(long, env = "AGENTPOOL_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: SocketAddr,
    /// PEM file of a CA to trust for https:// servers with a private CA
    #[arg(long, env = "AGENTPOOL_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
}

/// One client per (server, token), reused across passes.
pub struct ClientConnect {
    ca_pem: Option<Vec<u8>>,
    clients: Mutex<HashMap<(String, String), Arc<dyn QueueApi>>>,
}

impl ClientConnect {
    pub fn new(ca_pem: Option<Vec<u8>>) -> Self {
        Self {
            ca_pem,
            clients: Mutex::new(HashMap::new()),
        }
    }
}

impl Connect for ClientConnect {
    fn connect(&self, server: &str, token: &str) -> Result<Arc<dyn QueueApi>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let key = (server.to_string(), token.to_string());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut cc = ClientConfig::new(server).token(Some(token.to_string()));
        cc.ca_pem = self.ca_pem.clone();
        let api: Arc<dyn QueueApi> = Arc::new(Client::with_config(cc).map_err(|e| e.to_string())?);
        clients.insert(key, api.clone());
        Ok(api)
    }
}

pub async fn operator(_settings: &Settings, args: OperatorArgs) -> anyhow::Result<ExitCode> {
    let ca_pem = super::run_task::ca_pem(args.ca_cert.as_ref())?;
    let (kube, namespace) = super::launcher::kube_client(args.namespace.clone()).await?;
    let identity = args
        .id
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("agentpool-operator-{}", std::process::id()));
    let mut cfg = OperatorConfig::new(namespace, identity);
    cfg.lease_name = args.lease.clone();
    cfg.lease_duration = Duration::from_secs(args.lease_secs.max(3));
    cfg.renew_every = cfg.lease_duration / 3;
    cfg.interval = Duration::from_secs(args.interval_secs.max(1));
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(args.metrics_listen)
        .await
        .map_err(|e| {
            Exit::new(
                ExitCode::Usage,
                format!("cannot listen on {}: {e}", args.metrics_listen),
            )
        })?;
    let server = tokio::spawn(serve_metrics(listener, metrics.clone()));

    let (stop, signal) = super::pool::stop_on_signal();
    tracing::info!(namespace = %cfg.namespace, identity = %cfg.identity, "operator starting");
    run_operator(kube, cfg, Arc::new(ClientConnect::new(ca_pem)), metrics, stop).await;
    signal.abort();
    server.abort();
    eprintln!("operator stopped");
    Ok(ExitCode::Success)
}

/// A minimal HTTP/1.1 responder: `GET /metrics` (Prometheus text) and `GET /healthz`.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let n = match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf)).await {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(&buf[..n]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, ctype, body) = match path {
                "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics.render()),
                "/healthz" => ("200 OK", "application/json", "{\"status\":\"ok\"}".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
