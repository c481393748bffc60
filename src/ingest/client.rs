//! A small blocking HTTP/1.1 client for the ingest API: keep-alive, request
//! signing, and retries that reuse the same body (so the same request ids),
//! which is what makes a retry safe. Load generators and tests use it; it
//! knows only what the ingest server sends (`Content-Length` bodies).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::auth::{sign, Secret, CLIENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

/// Longest response head or body the client reads, in bytes.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;
/// Socket read and write timeout.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A byte stream to the server: TCP, or TLS over TCP.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Opens a new connection.
pub type Connector = Box<dyn Fn() -> io::Result<Box<dyn Stream>> + Send + Sync>;

/// Who signs requests.
#[derive(Clone, Debug)]
pub struct Signer {
    pub client_id: String,
    pub secret: Secret,
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// One keep-alive connection, reopened after any error.
pub struct HttpClient {
    connector: Connector,
    host: String,
    signer: Option<Signer>,
    conn: Option<BufReader<Box<dyn Stream>>>,
    /// The last signed timestamp: each request is signed at a later one,
    /// so two sends of the same body are two requests to the server's
    /// replay guard, not a replay.
    signed_ms: u128,
}

impl HttpClient {
    /// A client of the server at `addr`, over plain TCP.
    pub fn new(addr: SocketAddr, signer: Option<Signer>) -> HttpClient {
        let connector: Connector = Box::new(move || {
            let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            Ok(Box::new(stream) as Box<dyn Stream>)
        });
        HttpClient::with_connector(connector, addr.to_string(), signer)
    }

    /// A client over connections from `connector` (e.g. TLS), sending `host`.
    pub fn with_connector(connector: Connector, host: String, signer: Option<Signer>) -> HttpClient {
        HttpClient { connector, host, signer, conn: None, signed_ms: 0 }
    }

    /// `POST path` with `body`, signed if the client has a signer (over
    /// the path without its query string), each time at a new timestamp.
    pub fn post(&mut self, path: &str, content_type: &str, body: &[u8]) -> io::Result<Reply> {
        let mut head =
            format!("POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n", self.host, body.len());
        if let Some(signer) = &self.signer {
            let clock = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            self.signed_ms = clock.max(self.signed_ms + 1);
            let now = self.signed_ms.to_string();
            let signed_path = path.split('?').next().unwrap_or(path);
            let signature = sign(&signer.secret, "POST", signed_path, &now, body);
            head.push_str(&format!(
                "{CLIENT_HEADER}: {}\r\n{TIMESTAMP_HEADER}: {now}\r\n{SIGNATURE_HEADER}: {signature}\r\n",
                signer.client_id
            ));
        }
        head.push_str("\r\n");
        self.exchange(head.as_bytes(), body)
    }

    /// `GET path`.
    pub fn get(&mut self, path: &str) -> io::Result<Reply> {
        let head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", self.host);
        self.exchange(head.as_bytes(), b"")
    }

    /// Sends raw bytes as a request (for tests of malformed requests).
    pub fn raw(&mut self, request: &[u8]) -> io::Result<Reply> {
        self.exchange(request, b"")
    }

    /// Posts `body` until the server acknowledges it (202), it is refused
    /// for good (another 4xx), or `attempts` run out. Connection errors, 429,
    /// 5xx and a 401 for the signed timestamp (signed before the server
    /// restarted, say) are retried after a capped back-off (or the
    /// `Retry-After`), each attempt signed anew.
    pub fn post_until_accepted(&mut self, path: &str, content_type: &str, body: &[u8], attempts: u32) -> io::Result<Reply> {
        let mut backoff = Duration::from_millis(10);
        let mut last = Err(io::Error::other("no attempt made"));
        for _ in 0..attempts {
            let wait = match self.post(path, content_type, body) {
                Ok(reply) if reply.status == 202 || (reply.status < 500 && reply.status != 429 && !timestamp_refused(&reply)) => {
                    return Ok(reply)
                }
                Ok(reply) => {
                    let wait = reply.retry_after.map(Duration::from_secs).unwrap_or(backoff);
                    last = Ok(reply);
                    wait
                }
                Err(e) => {
                    last = Err(e);
                    backoff
                }
            };
            std::thread::sleep(wait.min(Duration::from_secs(2)));
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        last
    }

    fn exchange(&mut self, head: &[u8], body: &[u8]) -> io::Result<Reply> {
        let result = self.try_exchange(head, body);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_exchange(&mut self, head: &[u8], body: &[u8]) -> io::Result<Reply> {
        if self.conn.is_none() {
            self.conn = Some(BufReader::with_capacity(64 * 1024, (self.connector)()?));
        }
        let conn = self.conn.as_mut().ok_or_else(|| io::Error::other("no connection"))?;
        let stream = conn.get_mut();
        let sent = stream.write_all(head).and_then(|()| stream.write_all(body)).and_then(|()| stream.flush());
        // A server may answer before reading the whole body (413) and close:
        // its answer is still there to read.
        let (reply, close) = match (sent, read_reply(conn)) {
            (_, Ok(read)) => read,
            (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e),
        };
        if close {
            self.conn = None;
        }
        Ok(reply)
    }
}

/// A 401 for the signature's timestamp, which signing again answers.
fn timestamp_refused(reply: &Reply) -> bool {
    reply.status == 401 && reply.json()["field"] == TIMESTAMP_HEADER
}

fn bad(reason: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, reason.into())
}

/// Reads one response; also says whether the server closes the connection.
fn read_reply(conn: &mut impl BufRead) -> io::Result<(Reply, bool)> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a response"));
    }
    let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let (mut length, mut retry_after, mut close) = (None, None, false);
    let mut head_bytes = line.len();
    loop {
        line.clear();
        head_bytes += conn.read_line(&mut line)?;
        if head_bytes > MAX_RESPONSE_BYTES {
            return Err(bad("response head too long"));
        }
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else { return Err(bad(format!("bad header {header:?}"))) };
        let value = value.trim();
        match name.to_ascii_lowercase().as_str() {
            "content-length" => length = Some(value.parse::<usize>().map_err(|_| bad("bad content-length"))?),
            "retry-after" => retry_after = value.parse().ok(),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => return Err(bad("chunked responses are not supported")),
            _ => {}
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_RESPONSE_BYTES {
        return Err(bad("response body too long"));
    }
    let mut body = vec![0; length];
    conn.read_exact(&mut body)?;
    Ok((Reply { status, body, retry_after }, close))
}
