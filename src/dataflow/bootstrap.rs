//! Hands what worker 0 knows at start to every worker of a cluster.
//!
//! In a cluster whose store lives with process 0, only that process can read
//! the committed checkpoints, the resume epoch and the data directory's
//! salt. Before the job's dataflow is built, a one-shot dataflow broadcasts
//! worker 0's bytes to every worker, in every process; each worker then
//! builds the job from the same start.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::vec::{Broadcast, Input};
use timely::dataflow::operators::{Inspect, Probe};
use timely::worker::Worker;

/// Returns worker 0's `bytes` on every worker (`bytes` is ignored on the
/// others). Blocks until they arrived; every worker must call it.
pub fn from_worker_zero(worker: &mut Worker, bytes: Vec<u8>) -> Vec<u8> {
    let received: Rc<RefCell<Option<Vec<u8>>>> = Rc::default();
    let sink = Rc::clone(&received);
    let (mut input, probe) = worker.dataflow::<u64, _, _>(move |scope| {
        let (input, stream) = scope.new_input::<Vec<u8>>();
        let (probe, _) = stream
            .broadcast()
            .inspect(move |bytes: &Vec<u8>| {
                sink.borrow_mut().replace(bytes.clone());
            })
            .probe();
        (input, probe)
    });
    if worker.index() == 0 {
        input.send(bytes);
    }
    input.close();
    while !probe.done() {
        worker.step();
    }
    let bytes = received.borrow_mut().take();
    bytes.expect("worker 0 broadcasts its start")
}
