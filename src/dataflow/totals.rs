//! Hands every process's figures to worker 0 once a run has ended.
//!
//! The sources count clicks per process ([`crate::telemetry::SourceStats`]);
//! only process 0 reports a cluster's run, so after the job's dataflow is
//! done a one-shot dataflow exchanges each process's figures, once, to
//! worker 0. Nothing travels per click: the job's dataflow is untouched.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::{Exchange, Inspect, Probe};
use timely::worker::Worker;

/// How long a worker parks between looks at the gathering.
const PARK: Duration = Duration::from_millis(20);

/// Sends `bytes` (if any) to worker 0 and returns, on worker 0, what every
/// worker sent (nothing on the others). Blocks until all arrived; every
/// worker must call it. `waiting` runs whenever the worker looks again, so
/// that the caller can give up on a peer that is gone.
pub fn to_worker_zero(worker: &mut Worker, bytes: Option<Vec<u8>>, mut waiting: impl FnMut()) -> Vec<Vec<u8>> {
    let received: Rc<RefCell<Vec<Vec<u8>>>> = Rc::default();
    let sink = Rc::clone(&received);
    let (mut input, probe) = worker.dataflow::<u64, _, _>(move |scope| {
        let (input, stream) = scope.new_input::<Vec<u8>>();
        let (probe, _) = stream.exchange(|_| 0).inspect(move |bytes: &Vec<u8>| sink.borrow_mut().push(bytes.clone())).probe();
        (input, probe)
    });
    if let Some(bytes) = bytes {
        input.send(bytes);
    }
    input.close();
    worker.step_or_park_while(Some(PARK), || {
        waiting();
        !probe.done()
    });
    received.take()
}
