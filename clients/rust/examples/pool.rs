//! pool: 64 threads call the demo model through one fdn::Pool of 4 clients (docs/clients.md
//! shows this file). Usage: cargo run --release --offline --example pool -- SERVER
use fdn::{ConnectOptions, DataType, Pool, Tensor, TensorSpec};
use std::sync::Arc;
use std::time::Duration;

fn main() {
    let server = std::env::args().nth(1).unwrap_or_else(|| "demo_srv".into());
    // up to 4 clients, connected as they are needed; Send + Sync: share it by & or Arc
    let pool = match Pool::new(&server, ConnectOptions::default(), 4) {
        Ok(pool) => Arc::new(pool),
        Err(e) => {
            eprintln!("{e}"); // INVALID_INPUT: a bad name or options (a missing server fails a call)
            std::process::exit(1);
        }
    };
    let x: Arc<Vec<f32>> = Arc::new((0..784).map(|i| i as f32 / 784.0).collect());
    let timeout = Some(Duration::from_secs(5)); // the wait for a client, a connect, and the call
    let threads: Vec<_> = (0..64)
        .map(|_| {
            let (pool, x) = (Arc::clone(&pool), Arc::clone(&x));
            std::thread::spawn(move || -> fdn::Result<f32> {
                let input = Tensor::from_slice("x", &[1, 784], &x)?;
                let outputs = pool.infer("demo", &[input], timeout)?; // copies, this thread's
                Ok(outputs[0].to_vec::<f32>()?[0])
            })
        })
        .collect();
    let answers: Vec<f32> = threads
        .into_iter()
        .filter_map(|t| match t.join().expect("a thread panicked") {
            Ok(y0) => Some(y0),
            Err(e) => {
                eprintln!("{e}");
                None
            }
        })
        .collect();

    match answers.first() {
        Some(y0) => println!("{} of 64 answers: y[0] = {y0:.6}", answers.len()),
        None => println!("0 of 64 answers"),
    }

    // A client lent for a loan: the input written straight into its shared request area.
    let spec = TensorSpec::new("x", DataType::Fp32, &[1, 784]);
    let loaned = pool.with_client(timeout, |client| {
        let mut loan = client.loan("demo", &[spec])?;
        loan.input_as_mut::<f32>(0)?.copy_from_slice(&x);
        Ok(loan.infer(timeout)?[0].to_vec::<f32>()?[0])
    });
    match loaned {
        Ok(y0) => println!("loan: y[0] = {y0:.6}"),
        Err(e) => println!("loan failed: {e}"),
    }
    pool.close(); // later calls fail SERVER_UNAVAILABLE
}
