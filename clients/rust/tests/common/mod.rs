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
        let status = self.0.wait();
        // A server the test killed left its objects in /dev/shm: the test removes them once its
        // checks are made, so one that failed first left them for good. Cleaned here too.
        if matches!(status, Ok(s) if s.code().is_none())
            && std::path::Path::new(&format!("/dev/shm/fdn-{}", self.1)).exists()
        {
            if let Ok(python) = std::env::var("FDN_TEST_PYTHON") {
                let code = format!(
                    "from foundation_shm._cli import clean; clean({:?}, False)",
                    self.1
                );
                let _ = Command::new(python).args(["-c", &code]).status();
            }
        }
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
