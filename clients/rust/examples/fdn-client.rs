//! fdn-client: the Rust client's example program, and the driver the tests and benchmark run.
//!
//! ```text
//! fdn-client infer --name SERVER --model MODEL [--input NAME:DTYPE:DIM,DIM,...:FILE]...
//!                  [--timeout-ms T] [--loan] [--spin-us US] [--yield-after-us US]
//!                  [--hold connected|answered|again|loaned]
//! fdn-client bench --name SERVER --model MODEL --input ... [--iterations N] [--warmup W] [--loan]
//! fdn-client vectors DIR
//! ```
//!
//! `infer` prints one JSON line, `{"ok": true, "outputs": {...}}` or
//! `{"ok": false, "code": C, "error": NAME, "message": ...}`; exit status 0 ok, 2 usage,
//! 3 an error response, 4 no live server (docs/clients.md).

use fdn::{Client, ConnectOptions, DataType, Error, Status, Tensor, TensorSpec};
use std::fmt::Write as _;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

struct Args {
    name: String,
    model: String,
    inputs: Vec<Tensor>,
    timeout: Option<Duration>,
    loan: bool,
    spin_us: u64,
    yield_us: Option<u64>,
    iterations: usize,
    warmup: usize,
    /// `--hold STAGE`: stop there until stdin closes (the crash tests kill it meanwhile).
    hold: Option<String>,
}

fn usage(why: &str) -> ExitCode {
    eprintln!(
        "fdn-client: {why}\nusage: fdn-client infer|bench --name SERVER --model MODEL \
         [--input NAME:DTYPE:DIMS:FILE]... [--timeout-ms T] [--loan] [--iterations N] \
         [--warmup W] [--spin-us US] [--yield-after-us US] [--hold connected|answered|again|loaned]\n       \
         fdn-client vectors DIR"
    );
    ExitCode::from(2)
}

/// NAME:DTYPE:DIM,DIM,...:FILE (DIMS empty for a scalar); reads FILE's raw bytes.
fn parse_input(spec: &str) -> Result<Tensor, String> {
    let mut parts = spec.splitn(4, ':');
    let (Some(name), Some(dtype), Some(dims), Some(file)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("--input wants NAME:DTYPE:DIMS:FILE".into());
    };
    let datatype = DataType::from_name(dtype).ok_or(format!("bad --input dtype {dtype:?}"))?;
    let shape = if dims.is_empty() {
        Vec::new()
    } else {
        dims.split(',')
            .map(|d| d.trim().parse::<u64>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| "bad --input dims")?
    };
    let data = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    Tensor::new(name, datatype, &shape, data).map_err(|e| e.message)
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        name: String::new(),
        model: String::new(),
        inputs: Vec::new(),
        timeout: None,
        loan: false,
        spin_us: 100,
        yield_us: None,
        iterations: 1000,
        warmup: 100,
        hold: None,
    };
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        if k == "--loan" {
            a.loan = true;
            continue;
        }
        const KNOWN: [&str; 9] = [
            "--name",
            "--model",
            "--timeout-ms",
            "--iterations",
            "--warmup",
            "--spin-us",
            "--yield-after-us",
            "--input",
            "--hold",
        ];
        if !KNOWN.contains(&k.as_str()) {
            return Err(format!("unknown option {k}"));
        }
        let v = it.next().ok_or("an option lacks its value")?;
        let num = |v: &str| v.parse::<i64>().map_err(|_| format!("{k} wants a number"));
        match k.as_str() {
            "--name" => a.name = v.clone(),
            "--model" => a.model = v.clone(),
            "--timeout-ms" => {
                let n = num(v)?;
                if n < -1 {
                    return Err("--timeout-ms takes an integer >= -1".into());
                }
                a.timeout = u64::try_from(n).ok().map(Duration::from_millis)
            }
            "--iterations" => {
                a.iterations = usize::try_from(num(v)?).map_err(|_| "bad --iterations")?
            }
            "--warmup" => a.warmup = usize::try_from(num(v)?).map_err(|_| "bad --warmup")?,
            "--spin-us" => a.spin_us = u64::try_from(num(v)?).map_err(|_| "bad --spin-us")?,
            "--yield-after-us" => {
                a.yield_us = Some(u64::try_from(num(v)?).map_err(|_| "bad --yield-after-us")?)
            }
            "--input" => a.inputs.push(parse_input(v)?),
            "--hold" => {
                if !["connected", "answered", "again", "loaned"].contains(&v.as_str()) {
                    return Err("--hold takes connected, answered, again or loaned".into());
                }
                a.hold = Some(v.clone())
            }
            _ => return Err(format!("unknown option {k}")),
        }
    }
    if a.name.is_empty() || a.model.is_empty() {
        return Err("--name and --model are required".into());
    }
    if a.iterations < 1 {
        return Err("bad --iterations".into());
    }
    if a.hold.as_deref() == Some("loaned") && !a.loan {
        return Err("--hold loaned needs --loan".into());
    }
    Ok(a)
}

fn json_str(out: &mut String, s: &str) {
    fdn::json::write_string(out, s);
}

fn number(out: &mut String, x: f64, f32_precision: bool) {
    if x.is_nan() {
        out.push_str("NaN");
    } else if x.is_infinite() {
        out.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f32_precision {
        let _ = write!(out, "{:?}", x as f32); // shortest text that round-trips the f32
    } else {
        let _ = write!(out, "{x:?}");
    }
}

fn half_to_f32(h: u16) -> f32 {
    let (e, m) = ((h >> 10) & 0x1F, (h & 0x3FF) as f32);
    let v = match e {
        0 => m / 16_777_216.0,
        31 if m != 0.0 => f32::NAN,
        31 => f32::INFINITY,
        _ => (1.0 + m / 1024.0) * 2f32.powi(e as i32 - 15),
    };
    if h & 0x8000 != 0 {
        -v
    } else {
        v
    }
}

fn tensor_data(out: &mut String, t: &Tensor) {
    let n = t.datatype.itemsize();
    for (i, c) in t.data.chunks_exact(n).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let u16v = || u16::from_le_bytes([c[0], c[1]]);
        let int = |out: &mut String, v: i128| {
            let _ = write!(out, "{v}");
        };
        match t.datatype {
            DataType::Bool => out.push_str(if c[0] != 0 { "true" } else { "false" }),
            DataType::Uint8 | DataType::Bytes => int(out, c[0].into()),
            DataType::Int8 => int(out, (c[0] as i8).into()),
            DataType::Uint16 => int(out, u16v().into()),
            DataType::Int16 => int(out, (u16v() as i16).into()),
            DataType::Uint32 => int(out, u32::from_le_bytes(c.try_into().unwrap()).into()),
            DataType::Int32 => int(out, i32::from_le_bytes(c.try_into().unwrap()).into()),
            DataType::Uint64 => int(out, u64::from_le_bytes(c.try_into().unwrap()).into()),
            DataType::Int64 => int(out, i64::from_le_bytes(c.try_into().unwrap()).into()),
            DataType::Fp16 => number(out, half_to_f32(u16v()) as f64, true),
            DataType::Bf16 => number(out, f32::from_bits((u16v() as u32) << 16) as f64, true),
            DataType::Fp32 => number(out, f32::from_le_bytes(c.try_into().unwrap()) as f64, true),
            DataType::Fp64 => number(out, f64::from_le_bytes(c.try_into().unwrap()), false),
        }
    }
}

fn print_outputs(outputs: &[Tensor]) {
    let mut out = String::from("{\"ok\": true, \"outputs\": {");
    for (k, t) in outputs.iter().enumerate() {
        if k > 0 {
            out.push_str(", ");
        }
        json_str(&mut out, &t.name);
        let shape: Vec<String> = t.shape.iter().map(u64::to_string).collect();
        let _ = write!(
            out,
            ": {{\"datatype\": \"{}\", \"shape\": [{}], \"data\": [",
            t.datatype.name(),
            shape.join(", ")
        );
        tensor_data(&mut out, t);
        out.push_str("]}");
    }
    out.push_str("}}");
    emit(&out);
}

/// Print one line to stdout (a closed pipe is not worth a panic).
fn emit(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn fail(e: &Error) -> ExitCode {
    let mut out = format!(
        "{{\"ok\": false, \"code\": {}, \"error\": \"{}\", \"message\": ",
        e.code.code(),
        e.code.name()
    );
    json_str(&mut out, &e.message);
    out.push('}');
    emit(&out);
    ExitCode::from(if e.code == Status::ServerUnavailable {
        4
    } else {
        3
    })
}

/// At the stage `--hold` names, say so on stderr and wait for stdin to close (a test kills the
/// process meanwhile: the client is then idle on its channel, or its loan written and not sent).
fn hold(a: &Args, stage: &str) {
    if a.hold.as_deref() == Some(stage) {
        eprintln!("held {stage}");
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
    }
}

/// One call: a copy of the inputs (`infer`), or a loan written in place. `--hold again`: once
/// it is answered, hold, then make it again (the same loan written again) and return that.
fn call(client: &mut Client, a: &Args) -> Result<Vec<Tensor>, Error> {
    let again = a.hold.as_deref() == Some("again");
    if !a.loan {
        let outputs = client.infer(&a.model, &a.inputs, a.timeout)?;
        if !again {
            return Ok(outputs);
        }
        hold(a, "again");
        return client.infer(&a.model, &a.inputs, a.timeout);
    }
    let specs: Vec<TensorSpec> = a
        .inputs
        .iter()
        .map(|t| TensorSpec::new(t.name.clone(), t.datatype, &t.shape))
        .collect();
    let mut loan = client.loan(&a.model, &specs)?;
    for (i, t) in a.inputs.iter().enumerate() {
        loan.input_mut(i)?.copy_from_slice(&t.data); // written straight into shared memory
    }
    hold(a, "loaned");
    let outputs = loan.infer(a.timeout)?;
    if !again {
        return Ok(outputs);
    }
    hold(a, "again");
    for (i, t) in a.inputs.iter().enumerate() {
        loan.input_mut(i)?.copy_from_slice(&t.data);
    }
    loan.infer(a.timeout)
}

fn bench(client: &mut Client, a: &Args) -> Result<String, Error> {
    let mut lat = Vec::with_capacity(a.iterations);
    let run = |client: &mut Client, lat: &mut Vec<f64>, warm: bool| -> Result<f64, Error> {
        let started = Instant::now();
        if a.loan {
            let specs: Vec<TensorSpec> = a
                .inputs
                .iter()
                .map(|t| TensorSpec::new(t.name.clone(), t.datatype, &t.shape))
                .collect();
            let mut loan = client.loan(&a.model, &specs)?;
            let n = if warm { a.warmup } else { a.iterations };
            for _ in 0..n {
                let t0 = Instant::now();
                for (i, t) in a.inputs.iter().enumerate() {
                    loan.input_mut(i)?.copy_from_slice(&t.data);
                }
                loan.infer(a.timeout)?;
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        } else {
            let n = if warm { a.warmup } else { a.iterations };
            for _ in 0..n {
                let t0 = Instant::now();
                client.infer(&a.model, &a.inputs, a.timeout)?;
                lat.push(t0.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(started.elapsed().as_secs_f64())
    };
    run(client, &mut Vec::new(), true)?;
    let total = run(client, &mut lat, false)?;
    lat.sort_by(f64::total_cmp);
    let n = lat.len();
    let pick = |q: f64| lat[((q * (n - 1) as f64) + 0.5) as usize];
    Ok(format!(
        "{{\"p50_us\": {:.3}, \"p99_us\": {:.3}, \"rps\": {:.1}, \"iterations\": {n}}}",
        pick(0.50),
        pick(0.99),
        n as f64 / total
    ))
}

fn vectors(dir: &str) -> ExitCode {
    let Ok((passed, failed)) = fdn::vectors::check_dir(std::path::Path::new(dir)) else {
        return usage("cannot read the vectors directory");
    };
    let mut out = String::from("{\"passed\": ");
    let _ = write!(
        out,
        "{}, \"failed\": {}, \"failures\": [",
        passed.len(),
        failed.len()
    );
    for (i, (name, why)) in failed.iter().enumerate() {
        out.push_str(if i > 0 {
            ", {\"vector\": "
        } else {
            "{\"vector\": "
        });
        json_str(&mut out, name);
        out.push_str(", \"why\": ");
        json_str(&mut out, why);
        out.push('}');
    }
    out.push_str("]}");
    emit(&out);
    ExitCode::from(if failed.is_empty() { 0 } else { 1 })
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else {
        return usage("no command");
    };
    if cmd == "vectors" {
        return match argv.get(1) {
            Some(dir) if argv.len() == 2 => vectors(dir),
            _ => usage("vectors wants a directory"),
        };
    }
    if cmd != "infer" && cmd != "bench" {
        return usage("unknown command");
    }
    let a = match parse(&argv[1..]) {
        Ok(a) if cmd == "bench" && a.hold.is_some() => return usage("--hold goes with infer"),
        Ok(a) => a,
        Err(why) => return usage(&why),
    };
    let mut opts = ConnectOptions {
        spin: Duration::from_micros(a.spin_us),
        ..ConnectOptions::default()
    };
    if let Some(us) = a.yield_us {
        opts.yield_after = Duration::from_micros(us);
    }
    let mut client = match Client::connect(&a.name, opts) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    if cmd == "bench" {
        return match bench(&mut client, &a) {
            Ok(line) => {
                emit(&line);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e),
        };
    }
    hold(&a, "connected");
    match call(&mut client, &a) {
        Ok(outputs) => {
            hold(&a, "answered");
            print_outputs(&outputs);
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e),
    }
}
