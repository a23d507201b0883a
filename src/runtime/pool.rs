//! Worker threads kept for the life of the process: a parallel nest's
//! iterations are handed to them instead of spawning threads on every run
//! (spawning costs tens of microseconds on this machine, as much as a small
//! pooling or depthwise kernel takes in all).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

/// A piece of work: runs on a worker, then counts itself done.
pub type Task = Box<dyn FnOnce() + Send + 'static>;

struct Pool {
    /// One queue per worker (a worker runs one task at a time).
    workers: Mutex<Vec<Sender<Task>>>,
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        workers: Mutex::new(Vec::new()),
    })
}

/// Run `tasks` on worker threads and `mine` on the calling thread; return
/// when all are done. Workers are started on first need.
pub fn run_parallel(tasks: Vec<Task>, mine: impl FnOnce()) {
    let pending = Arc::new(AtomicUsize::new(tasks.len()));
    {
        let mut workers = pool().workers.lock().unwrap_or_else(|e| e.into_inner());
        while workers.len() < tasks.len() {
            let (tx, rx) = channel::<Task>();
            std::thread::spawn(move || {
                for task in rx {
                    task();
                }
            });
            workers.push(tx);
        }
        for (task, worker) in tasks.into_iter().zip(workers.iter()) {
            let pending = pending.clone();
            let job: Task = Box::new(move || {
                task();
                pending.fetch_sub(1, Ordering::Release);
            });
            worker
                .send(job)
                .expect("workers live as long as the process");
        }
    }
    mine();
    let mut spins = 0u32;
    while pending.load(Ordering::Acquire) > 0 {
        spins += 1;
        if spins < 10_000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
