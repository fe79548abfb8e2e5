//! Server names and data segment names: the longest allowed server name makes data names that
//! fit the channel block's `data_name` for every channel index, pid and generation the spec
//! allows (section 2); a longer one is refused, never cut.

use fdn::layout::{data_name, DATA_NAME_SIZE, SERVER_NAME_MAX};
use fdn::{Client, ConnectOptions, Status};

#[test]
fn the_longest_data_name_fits_with_its_nul() {
    let server = "x".repeat(SERVER_NAME_MAX);
    // the highest channel index (4095), a 7-digit pid (pid_max 4194304), an 11-digit generation
    let name = data_name(&server, 4095, 4_194_304, 99_999_999_999).unwrap();
    assert_eq!(name, format!("/fdn-{server}-d4095-4194304-99999999999"));
    assert_eq!(name.len(), DATA_NAME_SIZE - 1);
}

#[test]
fn a_data_name_one_byte_too_long_is_refused() {
    let server = "x".repeat(SERVER_NAME_MAX);
    assert_eq!(data_name(&server, 4095, 4_194_304, 100_000_000_000), None);
    assert_eq!(
        data_name(&format!("{server}x"), 4095, 4_194_304, 99_999_999_999),
        None
    );
    assert_eq!(data_name(&"x".repeat(48), 10, 12_345, 1), None); // the old limit's failure
}

#[test]
fn connect_refuses_a_server_name_one_past_the_limit() {
    let e =
        Client::connect(&"x".repeat(SERVER_NAME_MAX + 1), ConnectOptions::default()).unwrap_err();
    assert_eq!(e.code, Status::InvalidInput);
    assert!(
        e.message
            .contains("must be 1-32 characters of [A-Za-z0-9_]"),
        "{e}"
    );
}
