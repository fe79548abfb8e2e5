//! A control segment that cannot be opened (spec 10.1 step 1): only ENOENT is "no shm server
//! named"; the open is made to fail (`shm::blind::fail_open`) as another user's server (EACCES) or
//! the file limit (EMFILE, ENFILE) fails it, or is found empty. No server is needed.

use crate::shm::{self, Mapping};
use crate::{ffi, Client, ConnectOptions, Status};
use std::io;

/// What `Client::connect` to a name of no server says when its open fails `errno` (0: not made
/// to fail, ENOENT).
fn connect_failing(errno: i32) -> (Status, String) {
    let name = format!("rustopen{}", std::process::id());
    shm::blind::fail_open(errno);
    let made = Client::connect(&name, ConnectOptions::default());
    shm::blind::fail_open(0);
    let e = made.expect_err("a connect to a name of no server succeeded");
    (e.code, e.message.replace(&name, "m"))
}

/// A server another user started (mode 0600) is not "no shm server named": the client says whose
/// it is and what lets a group in, as the Python client does; one at its file limit may pass
/// later (OVERLOADED), naming the path and the error.
#[test]
fn a_control_segment_that_cannot_be_opened_says_why() {
    let cannot = |errno| {
        let e = io::Error::from_raw_os_error(errno);
        format!("shm server \"m\": cannot open /dev/shm/fdn-m: {e}")
    };
    for (errno, want) in [
        (
            0,
            (
                Status::ServerUnavailable,
                "no shm server named \"m\"".to_string(),
            ),
        ),
        (
            ffi::EACCES,
            (
                Status::ServerUnavailable,
                "no permission to use shm server \"m\" (/dev/shm/fdn-m): another user's; a server \
                 started with mode 0o660 lets its group in"
                    .to_string(),
            ),
        ),
        (ffi::EMFILE, (Status::Overloaded, cannot(ffi::EMFILE))),
        (ffi::ENFILE, (Status::Overloaded, cannot(ffi::ENFILE))),
        (
            ffi::EINVAL,
            (Status::ServerUnavailable, cannot(ffi::EINVAL)),
        ),
    ] {
        assert_eq!(
            connect_failing(errno),
            want,
            "shm_open failing errno {errno}"
        );
    }
}

/// A segment found empty (its server is between `shm_open` and `ftruncate`) is not ready yet, as
/// the C, Go and Python clients say; it was "no shm server named".
#[test]
fn an_empty_control_segment_is_not_ready() {
    let name = format!("rustempty{}", std::process::id());
    let control = crate::layout::control_name(&name);
    drop(Mapping::create_file(&control, 0o600).expect("create an empty control segment"));
    let made = Client::connect(&name, ConnectOptions::default());
    let _ = shm::unlink(&control);
    let e = made.expect_err("a connect to an empty control segment succeeded");
    let want = format!("shm server {name:?} is not ready (empty segment)");
    assert_eq!((e.code, e.message), (Status::ServerUnavailable, want));
}
