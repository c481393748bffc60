//! Running a test's child process to its end: its output read while it
//! runs (a child that fills a pipe nobody reads would never exit), and a
//! limit on how long it may take, so that a hung child fails its test
//! instead of hanging the suite.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Longest a child may run.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits for `child` to exit, reading its piped stdout and stderr; kills
/// it and panics, with what it printed, after [`CHILD_TIMEOUT`].
pub fn finish(mut child: Child) -> Output {
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if started.elapsed() > CHILD_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
            panic!(
                "a child ran for more than {CHILD_TIMEOUT:?}:\n{}{}",
                text(stdout.join().unwrap_or_default()),
                text(stderr.join().unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: stdout.join().expect("stdout reader"), stderr: stderr.join().expect("stderr reader") }
}

/// Runs `command` to its end with its output captured; it must succeed.
pub fn checked(command: &mut Command) -> Output {
    let out = finish(command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
