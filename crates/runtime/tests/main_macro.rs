//! `#[ss_runtime::main]` wraps an async fn into the main coroutine of a runtime.

use ss_runtime::{prio, CoroutineId, Priority};

#[ss_runtime::main(workers = 2, priority = 3)]
async fn answer() -> (u32, CoroutineId, Priority, usize) {
    let me = ss_runtime::current()
        .await
        .expect("the body runs as a coroutine");
    let my_priority = ss_runtime::priority(me).unwrap();
    let child = ss_runtime::spawn(async { 41 }, prio(5));
    let workers = ss_runtime::alloc_cpu().unwrap() - 1;
    (child.await.unwrap() + 1, me, my_priority, workers)
}

#[ss_runtime::main]
async fn defaults() -> Priority {
    let me = ss_runtime::current().await.unwrap();
    ss_runtime::priority(me).unwrap()
}

#[test]
fn the_attribute_runs_the_body_as_the_main_coroutine() {
    let (v, _me, my_priority, workers) = answer();
    assert_eq!(v, 42);
    assert_eq!(my_priority, prio(3));
    assert_eq!(workers, 2);
    assert_eq!(defaults(), prio(0));
}
