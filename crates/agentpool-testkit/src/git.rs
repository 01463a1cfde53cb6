//! Real git for tests: a smart-HTTP git server (`git http-backend` run as CGI behind a small
//! axum server on 127.0.0.1:0) with HTTP basic auth, serving bare repositories from a temp
//! dir, plus helpers to create repositories with history and to read what reached the remote.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
use base64::Engine;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Basic-auth user the server accepts (any user name works; only the password is checked).
pub const GIT_USER: &str = "agentpool";

/// A running smart-HTTP git server. Dropping it stops the server and deletes its repositories.
pub struct GitServer {
    addr: SocketAddr,
    root: tempfile::TempDir,
    token: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

struct ServerState {
    root: PathBuf,
    token: String,
    requests: AtomicU64,
    unauthorized: AtomicU64,
}

impl GitServer {
    /// Start a server on 127.0.0.1:0 that requires HTTP basic auth with password `token` for
    /// every request (clone, fetch and push).
    pub async fn start(token: &str) -> io::Result<Self> {
        let root = tempfile::tempdir()?;
        let state = Arc::new(ServerState {
            root: root.path().to_path_buf(),
            token: token.to_string(),
            requests: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
        });
        let app = Router::new().fallback(cgi).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            root,
            token: token.to_string(),
            state,
            task,
        })
    }

    /// The token (basic-auth password) the server accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Clone URL of repository `name` (no credentials in it).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// Where the bare repository `name` lives on disk.
    pub fn repo_path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    /// Requests served so far, and how many of them were refused for missing/wrong credentials.
    pub fn request_counts(&self) -> (u64, u64) {
        (
            self.state.requests.load(Ordering::Relaxed),
            self.state.unauthorized.load(Ordering::Relaxed),
        )
    }

    /// Create bare repository `name` whose `main` branch has one commit per entry of
    /// `commits`; each commit writes the given `(path, content)` files.
    pub fn create_repo(&self, name: &str, commits: &[&[(&str, &str)]]) -> io::Result<()> {
        let bare = self.repo_path(name);
        init_bare(&bare)?;
        let mut stream = Vec::new();
        for (i, files) in commits.iter().enumerate() {
            let msg = format!("commit {}", i + 1);
            write!(
                stream,
                "commit refs/heads/main\ncommitter Test <test@example.com> {} +0000\ndata {}\n{}\n",
                1_700_000_000 + i as u64,
                msg.len(),
                msg
            )?;
            for (path, content) in *files {
                write!(
                    stream,
                    "M 100644 inline {path}\ndata {}\n{content}\n",
                    content.len()
                )?;
            }
        }
        fast_import(&bare, &stream)
    }

    /// Create bare repository `name` with a long history, quickly (via `git fast-import`):
    /// `commits` commits on `main`, each rewriting one of `files` files with `bytes_per_commit`
    /// bytes of incompressible content. The tip's tree holds `files` files.
    pub fn create_large_repo(
        &self,
        name: &str,
        commits: usize,
        files: usize,
        bytes_per_commit: usize,
    ) -> io::Result<()> {
        let bare = self.repo_path(name);
        init_bare(&bare)?;
        let mut child = Command::new("git")
            .args(["fast-import", "--quiet", "--done"])
            .current_dir(&bare)
            .envs(clean_git_env())
            .stdin(Stdio::piped())
            .spawn()?;
        let mut stdin = io::BufWriter::new(child.stdin.take().ok_or_else(|| io::Error::other("no stdin"))?);
        // xorshift: incompressible bytes without a dependency on a RNG crate.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut buf = vec![0u8; bytes_per_commit];
        for i in 0..commits {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = b'a' + (x % 26) as u8;
            }
            let msg = format!("commit {}", i + 1);
            write!(
                stdin,
                "commit refs/heads/main\ncommitter Test <test@example.com> {} +0000\ndata {}\n{}\n",
                1_700_000_000 + i as u64,
                msg.len(),
                msg
            )?;
            write!(
                stdin,
                "M 100644 inline file{:04}.txt\ndata {}\n",
                i % files.max(1),
                buf.len()
            )?;
            stdin.write_all(&buf)?;
            stdin.write_all(b"\n")?;
        }
        stdin.write_all(b"done\n")?;
        stdin.flush()?;
        drop(stdin);
        let status = child.wait()?;
        if !status.success() {
            return Err(io::Error::other(format!("git fast-import failed: {status}")));
        }
        // fast-import wrote one pack; serve it as it is (a repack of hundreds of MB of
        // incompressible blobs would only add minutes).
        Ok(())
    }

    /// Add one commit on top of `main` in the remote (as if someone else pushed), writing the
    /// given files.
    pub fn add_commit(&self, name: &str, message: &str, files: &[(&str, &str)]) -> io::Result<()> {
        let mut stream = Vec::new();
        write!(
            stream,
            "commit refs/heads/main\ncommitter Test <test@example.com> 1800000000 +0000\ndata {}\n{}\nfrom refs/heads/main^0\n",
            message.len(),
            message
        )?;
        for (path, content) in files {
            write!(
                stream,
                "M 100644 inline {path}\ndata {}\n{content}\n",
                content.len()
            )?;
        }
        fast_import(&self.repo_path(name), &stream)
    }

    /// The commit `branch` points to in the remote, if it exists.
    pub fn branch_sha(&self, name: &str, branch: &str) -> Option<String> {
        let out = git_out(
            &self.repo_path(name),
            &["rev-parse", "--verify", "-q", &format!("refs/heads/{branch}")],
        )
        .ok()?;
        Some(out.trim().to_string()).filter(|s| !s.is_empty())
    }

    /// Branch names in the remote.
    pub fn branches(&self, name: &str) -> Vec<String> {
        git_out(
            &self.repo_path(name),
            &["for-each-ref", "--format=%(refname:short)", "refs/heads/"],
        )
        .map(|s| s.lines().map(str::to_string).collect())
        .unwrap_or_default()
    }

    /// Content of `path` at `rev` in the remote.
    pub fn read_file(&self, name: &str, rev: &str, path: &str) -> Option<String> {
        git_out(&self.repo_path(name), &["show", &format!("{rev}:{path}")]).ok()
    }

    /// Author line (`Name <email>`) and message of commit `rev` in the remote.
    pub fn commit_info(&self, name: &str, rev: &str) -> Option<(String, String)> {
        let out = git_out(
            &self.repo_path(name),
            &["log", "-1", "--format=%an <%ae>%n%B", rev],
        )
        .ok()?;
        let (author, msg) = out.split_once('\n')?;
        Some((author.to_string(), msg.trim().to_string()))
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Environment for git commands the test kit runs: no user or system configuration.
fn clean_git_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("GIT_CONFIG_GLOBAL", "/dev/null"),
        ("GIT_CONFIG_NOSYSTEM", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
    ]
}

fn init_bare(bare: &Path) -> io::Result<()> {
    let parent = bare
        .parent()
        .ok_or_else(|| io::Error::other("repo path has no parent"))?;
    let out = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main", "--"])
        .arg(bare)
        .current_dir(parent)
        .envs(clean_git_env())
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    // Pushes over HTTP are allowed for authenticated users; keep every object the tests make.
    git_ok(bare, &["config", "http.receivepack", "true"])?;
    git_ok(bare, &["config", "gc.auto", "0"])
}

fn fast_import(bare: &Path, stream: &[u8]) -> io::Result<()> {
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(bare)
        .envs(clean_git_env())
        .stdin(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| io::Error::other("no stdin"))?
        .write_all(stream)?;
    let status = child.wait()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("git fast-import failed: {status}")))
    }
}

/// `git ARGS` in `dir` for a test's own working repositories, committing as a fixed test
/// identity; panics when git fails. Its standard output, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn git_out(dir: &Path, args: &[&str]) -> io::Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .envs(clean_git_env())
        .output()?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

fn git_ok(dir: &Path, args: &[&str]) -> io::Result<()> {
    git_out(dir, args).map(|_| ())
}

fn authorized(headers: &HeaderMap, token: &str) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, pass) = decoded.split_once(':')?;
    (pass == token && !user.is_empty()).then(|| user.to_string())
}

fn plain(status: StatusCode, msg: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(msg.to_string()));
    *r.status_mut() = status;
    r
}

/// Run `git http-backend` for one request (CGI): request headers become environment
/// variables, the body is streamed to its stdin, and its stdout (CGI headers, then the body)
/// is streamed back.
async fn cgi(State(state): State<Arc<ServerState>>, req: Request) -> Response<Body> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let Some(user) = authorized(req.headers(), &state.token) else {
        state.unauthorized.fetch_add(1, Ordering::Relaxed);
        let mut r = plain(StatusCode::UNAUTHORIZED, "authentication required\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"agentpool-test\""),
        );
        return r;
    };
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = tokio::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(clean_git_env())
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    for (var, name) in [
        ("CONTENT_TYPE", "content-type"),
        ("CONTENT_LENGTH", "content-length"),
        ("HTTP_CONTENT_ENCODING", "content-encoding"),
        ("GIT_PROTOCOL", "git-protocol"),
    ] {
        if let Some(v) = header(name) {
            cmd.env(var, v);
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("spawn: {e}")),
    };
    let (Some(mut stdin), Some(mut stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "no pipes");
    };
    // Feed the body concurrently: http-backend may start answering before it read everything.
    tokio::spawn(async move {
        let mut data = body.into_data_stream();
        while let Some(Ok(chunk)) = data.next().await {
            if stdin.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = stdin.shutdown().await;
    });

    // Read the CGI header block.
    let mut head = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let body_start = loop {
        if let Some(end) = find_header_end(&head) {
            break end;
        }
        match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => return plain(StatusCode::BAD_GATEWAY, "http-backend gave no headers"),
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    };
    let rest = head.split_off(body_start.1);
    let head_text = String::from_utf8_lossy(&head[..body_start.0]).into_owned();
    let mut response = Response::builder().status(StatusCode::OK);
    for line in head_text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split(' ')
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .unwrap_or(500);
            response = response.status(code);
        } else if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.trim()), HeaderValue::try_from(value)) {
            response = response.header(n, v);
        }
    }
    let first = futures::stream::iter([Ok::<Bytes, io::Error>(Bytes::from(rest))]);
    let tail = futures::stream::unfold((stdout, child, buf), |(mut out, mut child, mut buf)| async move {
        match out.read(&mut buf).await {
            Ok(0) => {
                let _ = child.wait().await;
                None
            }
            Ok(n) => Some((Ok(Bytes::copy_from_slice(&buf[..n])), (out, child, buf))),
            Err(e) => Some((Err(e), (out, child, buf))),
        }
    });
    response
        .body(Body::from_stream(first.chain(tail)))
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "bad CGI headers"))
}

/// Position of the end of the CGI header block: (end of headers, start of body).
fn find_header_end(buf: &[u8]) -> Option<(usize, usize)> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| (i, i + 4));
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}
