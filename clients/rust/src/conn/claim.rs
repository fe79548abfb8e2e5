//! A channel claimed under the region mutex, with its first data segment (10.1 steps 4-7).

use super::segment::{create_data, publish_data, DataName};
use crate::error::{Error, Result, Status};
use crate::layout::{self as l, channel as ch, region as rg};
use crate::shm::Mapping;
use std::sync::atomic::Ordering::*;

/// A channel claimed under the region mutex, with its first data segment (10.1 steps 4-7).
pub(super) struct Claim {
    pub(super) index: usize,
    pub(super) base: usize,
    pub(super) data: Mapping,
    pub(super) data_name: DataName,
    pub(super) gen: u64,
    pub(super) seq: u64,
}

/// 10.1 steps 4-7, the region mutex held: take the first free channel, give it a data segment of
/// `capacity` for requests and for responses, and publish this process as its owner.
pub(super) fn claim_channel(
    ctl: &Mapping,
    name: &str,
    count: usize,
    capacity: usize,
    mode: u32,
    pid: u32,
    start: u64,
) -> Result<Claim> {
    let index = (0..count)
        .find(|i| {
            ctl.u32(l::CHANNELS_OFFSET + i * l::CHANNEL_SIZE + ch::OWNER_PID)
                .load(SeqCst)
                == 0
        })
        .ok_or_else(|| {
            Error::new(
                Status::Overloaded,
                format!("shm server {name:?}: all {count} channels are in use"),
            )
        })?;
    let base = l::CHANNELS_OFFSET + index * l::CHANNEL_SIZE;
    let gen = next_gen(ctl.u64(base + ch::DATA_GEN).load(Relaxed));
    let (data, data_name) = create_data(name, index, gen, capacity, capacity, mode)?;
    ctl.u32(base + ch::CLIENT_SLEEPING).store(0, Relaxed);
    ctl.u64(base + ch::OWNER_START_TIME).store(start, Relaxed);
    publish_data(ctl, base, capacity, capacity, &data_name, gen);
    let seq = ctl.u64(base + ch::SERVER_SEQ).load(Acquire);
    ctl.u64(base + ch::CLIENT_SEQ).store(seq, Release);
    ctl.u32(base + ch::OWNER_PID).store(pid, SeqCst);
    ctl.u64(rg::CONNECT_EPOCH).fetch_add(1, SeqCst);
    Ok(Claim {
        index,
        base,
        data,
        data_name,
        gen,
        seq,
    })
}

/// The data generation after `gen`, wrapping as the C and Go clients' do (spec 10.1): a
/// `data_gen` a previous owner left at the largest u64 was refused (INTERNAL), and the channel,
/// the lowest free one, which every connect takes, refused every connect after it.
pub(super) fn next_gen(gen: u64) -> u64 {
    gen.wrapping_add(1)
}
