//! A fixed-seed fuzz loop over the decoders: every committed vector, mutated (bit flips, field
//! pokes, truncation, growth, splices) and re-sealed (CRC32 over header bytes [0, 28) then the
//! payload, as _vector_messages._reseal does) so the checks after the CRC are reached. Decoding
//! must return Ok or Err, never panic, and a decoded tensor's bytes lie inside the message.
//! FDN_FUZZ_ITERS sets the iterations (default 30000), FDN_FUZZ_SEED the seed.

use fdn::codec::{decode_request, decode_response, Limits, TensorRef};
use std::path::{Path, PathBuf};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol/vectors");
    let mut out = Vec::new();
    for d in [dir.clone(), dir.join("cuda_ipc")] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&d)
            .expect("read the vectors directory")
            .map(|e| e.expect("a directory entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "bin"))
            .collect();
        paths.sort();
        out.extend(
            paths
                .iter()
                .map(|p: &PathBuf| std::fs::read(Path::new(p)).expect("read a vector")),
        );
    }
    assert!(out.len() >= 20, "only {} vectors", out.len());
    out
}

fn reseal(b: &mut [u8]) {
    if b.len() < 32 {
        return;
    }
    let payload = u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    let end = (32 + payload).min(b.len());
    let crc = fdn::crc32::update(fdn::crc32::crc32(&b[..28]), &b[32..end]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
}

const EDGES: [u64; 16] = [
    0,
    1,
    8,
    9,
    63,
    64,
    112,
    256,
    4096,
    1 << 20,
    (1 << 20) + 1,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 62,
    i64::MAX as u64,
    u64::MAX,
];

fn poke(rng: &mut Rng, b: &mut [u8]) {
    const FIELDS: [(usize, usize); 14] = [
        (4, 2),
        (6, 2),
        (16, 4),
        (20, 4),
        (32, 4),
        (36, 4),
        (40, 4),
        (44, 4),
        (48, 8),
        (112, 8),
        (120, 4),
        (124, 4),
        (128, 4),
        (132, 4),
    ];
    const DESC: [(usize, usize); 10] = [
        (64, 4),
        (68, 4),
        (72, 8),
        (80, 8),
        (136, 8),
        (144, 8),
        (152, 4),
        (160, 4),
        (168, 1),
        (232, 8),
    ];
    let v = if rng.next() & 1 == 0 {
        EDGES[rng.below(EDGES.len())]
    } else {
        rng.next()
    };
    let (at, width) = if rng.next() % 3 != 0 {
        FIELDS[rng.below(FIELDS.len())]
    } else {
        let (o, w) = DESC[rng.below(DESC.len())];
        (144 + 256 * rng.below(3) + o, w)
    };
    if at + width <= b.len() {
        b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut b = seeds[rng.below(seeds.len())].clone();
    for _ in 0..1 + rng.below(4) {
        match rng.next() % 7 {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    if !b.is_empty() {
                        let i = rng.below(b.len());
                        b[i] ^= 1 << rng.below(8);
                    }
                }
            }
            1 | 2 => poke(rng, &mut b),
            3 => b.truncate(rng.below(b.len() + 1)),
            4 => {
                let big = rng.next() & 1 == 0;
                let n = rng.below(if big { 4096 } else { 64 });
                b.extend((0..n).map(|_| {
                    if rng.next() & 1 == 0 {
                        0
                    } else {
                        rng.next() as u8
                    }
                }));
            }
            5 => {
                let o = &seeds[rng.below(seeds.len())];
                if !b.is_empty() && !o.is_empty() {
                    let at = rng.below(b.len());
                    let from = rng.below(o.len());
                    let n = rng.below(o.len() - from + 1).min(b.len() - at);
                    b[at..at + n].copy_from_slice(&o[from..from + n]);
                }
            }
            _ => {
                if b.len() >= 32 {
                    let p = (b.len() - 32) as u32;
                    b[16..20].copy_from_slice(&p.to_le_bytes());
                }
            }
        }
    }
    if rng.next() % 8 != 0 {
        reseal(&mut b);
    }
    b
}

fn inside(area: &[u8], refs: &[TensorRef]) {
    for r in refs.iter().filter(|r| r.cuda.is_none()) {
        assert!(r
            .data_offset
            .checked_add(r.data_size)
            .is_some_and(|e| e <= area.len()));
        assert_eq!(r.bytes(area).len(), r.data_size);
    }
}

#[test]
fn decoders_survive_mutated_vectors() {
    let iters: u64 = std::env::var("FDN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30_000);
    let seed: u64 = std::env::var("FDN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let seeds = seeds();
    let mut rng = Rng(seed.max(1));
    let wide = Limits {
        max_tensors: 1 << 20,
        max_bytes: u64::MAX,
        ..Limits::default()
    };
    let (mut requests, mut responses) = (0u64, 0u64);
    for i in 0..iters {
        let b = mutate(&mut rng, &seeds);
        let limits = if i % 2 == 0 { Limits::default() } else { wide };
        let area = b.as_slice();
        let caught = std::panic::catch_unwind(|| {
            let mut n = (0, 0);
            if let Ok(r) = decode_request(area, &limits) {
                inside(area, &r.inputs);
                n.0 = 1;
            }
            if let Ok(r) = decode_response(area, &limits) {
                inside(area, &r.outputs);
                n.1 = 1;
            }
            n
        });
        match caught {
            Ok((q, s)) => {
                requests += q;
                responses += s;
            }
            Err(_) => panic!("iteration {i} (seed {seed}): a decoder panicked on {b:02x?}"),
        }
    }
    eprintln!("{iters} iterations: {requests} requests and {responses} responses decoded");
    assert!(requests > 0 && responses > 0);
}
