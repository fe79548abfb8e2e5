//! The Python echo server (`python -m foundation_shm._echo NAME`) the integration tests call,
//! in its own process: started under a name, stopped (SIGTERM, a clean stop) when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running echo server and its name.
pub struct Echo(pub Child, pub String);

impl Drop for Echo {
    fn drop(&mut self) {
        // SIGTERM via kill(1): the echo server then stops cleanly and unlinks its objects (a
        // server a failed test left stopped is resumed first, or it would never see it).
        let _ = Command::new("kill")
            .args(["-CONT", &self.0.id().to_string()])
            .status();
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// `python -m foundation_shm._echo name`, once it says it serves.
pub fn start_echo(python: &str, name: String) -> Echo {
    let mut child = Command::new(python)
        .args(["-m", "foundation_shm._echo", &name])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the echo server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let echo = Echo(child, name);
    assert_eq!(line.trim(), "ready");
    echo
}
