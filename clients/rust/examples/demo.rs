//! The smallest useful program: call the demo model of a running server.
//!
//! ```text
//! foundation serve --transport shm --name demo_srv &
//! cargo run --release --offline --example demo -- demo_srv
//! ```

use fdn::{Client, ConnectOptions, DataType, Status, Tensor, TensorSpec};
use std::time::Duration;

fn main() -> Result<(), fdn::Error> {
    let server = std::env::args().nth(1).unwrap_or_else(|| "demo_srv".into());
    let mut client = match Client::connect(&server, ConnectOptions::default()) {
        Err(e) if e.code == Status::ServerUnavailable => {
            eprintln!("no server {server:?}: start one with `foundation serve --transport shm --name {server}`");
            std::process::exit(4);
        }
        other => other?,
    };

    // A copy of the inputs: an image of 784 pixels, batch 1.
    let pixels: Vec<f32> = (0..784).map(|i| (i % 28) as f32 / 28.0).collect();
    let x = Tensor::from_slice("x", &[1, 784], &pixels)?;
    let outputs = client.infer("demo", &[x], Some(Duration::from_secs(1)))?;
    let y: Vec<f32> = outputs[0].to_vec()?;
    let best = (0..y.len())
        .max_by(|&a, &b| y[a].total_cmp(&y[b]))
        .unwrap_or(0);
    println!(
        "{} {:?} = {y:?}; class {best}",
        outputs[0].name, outputs[0].shape
    );

    // The same through a loan: the pixels are written straight into shared memory.
    let mut loan = client.loan("demo", &[TensorSpec::new("x", DataType::Fp32, &[1, 784])])?;
    loan.input_as_mut::<f32>(0)?.copy_from_slice(&pixels);
    let again = loan.infer(Some(Duration::from_secs(1)))?;
    assert_eq!(again, outputs);

    // Errors come back typed.
    let err = client.infer("nope", &[], None).unwrap_err();
    println!("unknown model: {err}");
    Ok(())
}
