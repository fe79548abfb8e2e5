//! hello: call the demo model by copy, then by loan (docs/clients.md shows this file).
//! Usage: cargo run --release --offline --example hello -- SERVER
use fdn::{Client, ConnectOptions, DataType, Tensor, TensorSpec};
use std::time::Duration;

fn main() {
    let server = std::env::args().nth(1).unwrap_or_else(|| "demo_srv".into());
    let mut client = match Client::connect(&server, ConnectOptions::default()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("{e}"); // e.g. "SERVER_UNAVAILABLE: no shm server named ..."
            std::process::exit(1);
        }
    };
    let x: Vec<f32> = (0..784).map(|i| i as f32 / 784.0).collect();
    let timeout = Some(Duration::from_millis(500)); // None: no deadline
    let input = Tensor::from_slice("x", &[1, 784], &x).unwrap();
    match client.infer("demo", std::slice::from_ref(&input), timeout) {
        Ok(outputs) => {
            let y: Vec<f32> = outputs[0].to_vec().unwrap(); // outputs[0]: "y", shape [1, 10]
            println!("copy: y[0] = {:.6} of {}", y[0], outputs[0].shape[1]);
        }
        Err(e) => println!("copy failed: {e}"),
    }

    // A loan: the input is written straight into the shared request area.
    let spec = TensorSpec::new("x", DataType::Fp32, &[1, 784]);
    let loaned = client.loan("demo", &[spec]).and_then(|mut loan| {
        loan.input_as_mut::<f32>(0)?.copy_from_slice(&x);
        loan.infer(timeout)
    });
    match loaned {
        Ok(outputs) => println!("loan: y[0] = {:.6}", outputs[0].to_vec::<f32>().unwrap()[0]),
        Err(e) => println!("loan failed: {e}"),
    }

    // Errors: a code (e.code, a fdn::Status) and the server's message (e.message).
    let e = client
        .infer("no_such_model", &[input], timeout)
        .unwrap_err();
    println!("unknown model: {}", e.code);
}
