//! A late answer that lands as the wait for it (spec 7.5) finds the server gone: the server
//! answered the abandoned request and died between the wait's look at the response word and its
//! look at the server's liveness. The call's own request must not go to that server: it
//! reconnects (7.5) and, with no server since, fails "not sent". It was published on the dead
//! server's channel and failed "not sent again" a slice later (10.3's resend), naming a request
//! never dispatched. Runs only when `FDN_TEST_PYTHON` names a Python with foundation_shm.

use super::restart_wait_tests::{abandon, int, kill, wait_asleep, Hidden};
use super::tests::{base, region};
use crate::layout::{self as l, channel as ch};
use crate::pool::tests::gate;
use crate::shm::{self, Semaphore};
use crate::{Client, ConnectOptions, Counters, Status};
use std::sync::atomic::Ordering::SeqCst;
use std::thread;
use std::time::Duration;

#[test]
fn a_late_answer_landing_as_the_wait_finds_the_server_gone_sends_nothing_there() {
    let Some(mut g) = gate("rustlateans", 4) else {
        return;
    };
    let mut client = Client::connect(g.name(), ConnectOptions::default()).unwrap();
    abandon(&g, &mut client);
    let (i, name) = (client.channel().unwrap(), g.name().to_string());
    let (e, dead) = thread::scope(|s| {
        let call = s.spawn(|| client.infer("count_b", &int(5), Some(Duration::from_secs(30))));
        wait_asleep(&name, i);
        let pid = g.server.0.id();
        shm::blind::hide(pid);
        let hidden = Hidden(vec![kill(&mut g)]);
        // the first look at the dead server lands the late answer first: as the server's respond
        // stores it, then dies
        let ctl = region(&name);
        shm::blind::at_look(pid, move || {
            let s = ctl.u64(base(i) + ch::CLIENT_SEQ).load(SeqCst);
            ctl.u64(base(i) + ch::SERVER_SEQ).store(s, SeqCst);
            ctl.u32(base(i) + ch::SERVER_BUSY).store(0, SeqCst);
        });
        drop(hidden);
        // a post (a stale one, from an earlier answer seen before the wait slept) wakes the call
        // within its slice: it looks at the server in that wake
        Semaphore::open(&l::channel_sem_name(&name, i))
            .unwrap()
            .post();
        (call.join().unwrap().unwrap_err(), pid)
    });
    super::tests::clean(&name); // what the killed server left
    assert_eq!(client.counters(), Counters::default(), "a failed reconnect");
    let want = format!(
        "shm server {name:?} (pid {dead}) is gone; not sent: no server has started under that \
         name since"
    );
    assert_eq!(
        (e.code, e.message.as_str(), e.request_id),
        (Status::ServerUnavailable, want.as_str(), 0)
    );
}
