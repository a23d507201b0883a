//! Worker threads kept for the life of the process: a parallel nest's
//! iterations are handed to them instead of spawning threads on every run
//! (spawning costs tens of microseconds on this machine, as much as a small
//! pooling or depthwise kernel takes in all). A worker that finishes a task
//! watches its queue for a while before it sleeps: waking a sleeping thread
//! costs about as much again, and kernels run back to back (the nests of
//! one program, a model's layers) would pay it every time.

use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker polls for its next task before sleeping.
const SPIN: Duration = Duration::from_micros(200);

/// A piece of work for a worker.
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

/// Hand `tasks` to worker threads, one each, and return at once (workers
/// are started on first need). The caller waits for what it needs done
/// (see `exec::run_split`): a task a sleeping worker runs late must then find
/// nothing left to do.
pub fn hand_out(tasks: Vec<Task>) {
    let mut workers = pool().workers.lock().unwrap_or_else(|e| e.into_inner());
    while workers.len() < tasks.len() {
        let (tx, rx) = channel::<Task>();
        std::thread::spawn(move || {
            while let Some(task) = next_task(&rx) {
                task();
            }
        });
        workers.push(tx);
    }
    for (task, worker) in tasks.into_iter().zip(workers.iter()) {
        worker
            .send(task)
            .expect("workers live as long as the process");
    }
}

/// The worker's next task: polled for [`SPIN`], then waited for; `None`
/// once the pool is gone.
fn next_task(rx: &Receiver<Task>) -> Option<Task> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(task) => return Some(task),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() < SPIN => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}
