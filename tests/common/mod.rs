//! What the tests against a real Apache Cassandra share: a cluster of one
//! node or three, started with `scripts/cassandra.sh` (jars from Maven
//! Central into a git-ignored cache on first use) on free ports, and a
//! watchdog that stops it and deletes its folder once the test process is
//! gone, however it ends.

use std::path::Path;
use std::process::{Command, Output, Stdio};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Ports a cluster takes from its `--port P`: CQL on P and the nodes'
/// own traffic on P + 1 (on each node's address), JMX on 127.0.0.1 at
/// P + 2 + node (`scripts/cassandra.sh`).
const CLUSTER_PORTS: u16 = 5;
/// Highest port tried: the cluster's ports stay below 65536.
const MAX_BASE_PORT: u16 = 60_000;

/// `scripts/cassandra.sh COMMAND --dir DIR ARGS…`, its output.
pub fn cassandra_script(command: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/cassandra.sh"))
        .arg(command)
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/cassandra.sh")
}

/// Starts a cluster of `nodes` (1 or 3) in `dir` (deleted first) for this
/// test process, with a watchdog that stops it once the process is gone.
/// Returns the contact points, e.g. `127.0.0.2:P,127.0.0.3:P,127.0.0.4:P`.
pub fn start_cassandra(nodes: u8, dir: &Path) -> String {
    let _ = std::fs::remove_dir_all(dir);
    let port = free_ports(nodes).to_string();
    let out = cassandra_script("start", dir, &["--nodes", &nodes.to_string(), "--port", &port]);
    let watchdog = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; bash '{}' stop --dir '{dir}' && rm -rf '{dir}'",
        std::process::id(),
        Path::new(ROOT).join("scripts/cassandra.sh").display(),
        dir = dir.display()
    );
    // Detached (the shell forks it and returns), so it outlives this process.
    let detached = format!("({watchdog}) >/dev/null 2>&1 &");
    Command::new("bash").args(["-c", &detached]).stdin(Stdio::null()).status().unwrap();
    assert!(
        out.status.success(),
        "cassandra.sh start failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().last().expect("cassandra.sh prints the contact points").trim().to_owned()
}

/// A port `p` with `p .. p + CLUSTER_PORTS` free on 127.0.0.1 and, for
/// three nodes, `p` and `p + 1` free on each node's address too.
pub fn free_ports(nodes: u8) -> u16 {
    let free = |address: &str, port: u16| std::net::TcpListener::bind((address, port)).is_ok();
    let addresses: Vec<String> = if nodes == 1 { vec![] } else { (2..2 + nodes).map(|i| format!("127.0.0.{i}")).collect() };
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if port < MAX_BASE_PORT
            && (0..CLUSTER_PORTS).all(|i| free("127.0.0.1", port + i))
            && addresses.iter().all(|a| free(a, port) && free(a, port + 1))
        {
            return port;
        }
    }
}
