//! A bounded pool of reusable worker threads.
//!
//! Threads are started lazily, up to `max_threads`, and kept once started: a worker that
//! finishes a job takes the next queued one, or parks on a slot of its own on a stack of
//! idle workers. A job goes to the most recently idle worker with a single wake-up (its
//! slot is filled, its thread unparked), or starts a new thread carrying the job with it.
//! Nobody spins: on a 2-core host a spinning waiter takes the CPU from the very thread it
//! waits for (a channel's spin-then-park receive cost 4 to 8 sched_yield per session).
//! When every thread is busy a job waits in the queue, up to `max_waiting` of them; past
//! that `try_execute` hands the job back so the caller can refuse its client instead of
//! blocking or growing without bound.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, Thread};

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct WorkerPool {
    name: &'static str,
    max_threads: usize,
    max_waiting: usize,
    stack_size: usize,
    shared: Arc<Shared>,
}

/// The pool's books, under one lock so that "is a thread free for this job" is never
/// answered from a state caught half-way through an update.
struct Shared {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    threads: usize,
    /// Parked workers, the most recently idle on top: its stack and caches are the warmest.
    idle: Vec<Idle>,
    /// Jobs waiting for a thread, oldest first.
    queue: VecDeque<Job>,
}

/// A parked worker: its slot, and its thread to unpark once the slot holds a job.
#[derive(Clone)]
struct Idle {
    slot: Arc<Slot>,
    thread: Thread,
}

/// Where a worker finds its next job: filled by `try_execute`, emptied by the worker.
struct Slot(Mutex<Option<Job>>);

impl Slot {
    fn holding(job: Job) -> Slot {
        Slot(Mutex::new(Some(job)))
    }

    fn put(&self, job: Job) {
        *lock(&self.0) = Some(job);
    }

    fn take(&self) -> Option<Job> {
        lock(&self.0).take()
    }
}

/// A job runs outside every lock, so a poisoned lock only means a panic between two
/// updates of the books; they are still the best we have.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A pool's load at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    pub threads: usize,
    pub max_threads: usize,
    /// Threads running a job.
    pub busy: usize,
    /// Jobs waiting for a thread.
    pub queued: usize,
}

/// Why a job was handed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every thread is busy and the wait queue is full.
    Full,
    /// The operating system would not start another thread.
    NoThread,
}

impl WorkerPool {
    pub(crate) fn new(name: &'static str, max_threads: usize, max_waiting: usize, stack_size: usize) -> Self {
        WorkerPool {
            name,
            max_threads: max_threads.max(1),
            max_waiting,
            stack_size,
            shared: Arc::new(Shared { state: Mutex::new(State::default()) }),
        }
    }

    /// Runs `job` on an idle thread, or on a new one if none is idle and the limit allows,
    /// or queues it; hands it back when the queue is full or no thread can be started.
    pub(crate) fn try_execute(&self, job: Job) -> Result<(), (Job, Refused)> {
        let mut state = self.shared.lock();
        if let Some(idle) = state.idle.pop() {
            drop(state);
            // Popped from the stack, the slot is ours alone: fill it, wake its worker.
            idle.slot.put(job);
            idle.thread.unpark();
            return Ok(());
        }
        let job = if state.threads < self.max_threads {
            match self.spawn_worker(job) {
                Ok(()) => {
                    state.threads += 1;
                    return Ok(());
                }
                Err((job, _)) if state.threads == 0 => return Err((job, Refused::NoThread)),
                Err((job, e)) => {
                    log::warn!("{}: cannot start another thread ({e}); queueing", self.name);
                    if state.queue.len() >= self.max_waiting {
                        return Err((job, Refused::NoThread));
                    }
                    job
                }
            }
        } else if state.queue.len() >= self.max_waiting {
            return Err((job, Refused::Full));
        } else {
            job
        };
        state.queue.push_back(job);
        Ok(())
    }

    /// Starts a worker whose first job is `job`; hands the job back if it cannot.
    fn spawn_worker(&self, job: Job) -> Result<(), (Job, std::io::Error)> {
        let slot = Arc::new(Slot::holding(job));
        let (shared, theirs) = (Arc::clone(&self.shared), Arc::clone(&slot));
        let spawned = thread::Builder::new()
            .name(self.name.to_owned())
            .stack_size(self.stack_size)
            .spawn(move || shared.work(theirs));
        spawned.map(drop).map_err(|e| (slot.take().expect("a thread never started leaves its job"), e))
    }

    /// Threads started so far.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// How loaded the pool is now.
    pub(crate) fn load(&self) -> Load {
        let state = self.shared.lock();
        Load {
            threads: state.threads,
            max_threads: self.max_threads,
            busy: state.threads - state.idle.len(),
            queued: state.queue.len(),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// A worker's life: the job it was started with, then each next one.
    fn work(&self, slot: Arc<Slot>) {
        super::stack::remember_this_thread();
        let me = Idle { slot, thread: thread::current() };
        let mut job = me.slot.take().expect("a worker starts with a job");
        loop {
            // A panicking job must not shrink the pool: catch it here, report it, go on.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                log::error!("a worker job panicked; the worker carries on");
            }
            job = self.next_job(&me);
        }
    }

    /// The oldest queued job, or else the one put in this worker's slot once it is on
    /// the idle stack.
    fn next_job(&self, me: &Idle) -> Job {
        {
            let mut state = self.lock();
            if let Some(job) = state.queue.pop_front() {
                return job;
            }
            state.idle.push(me.clone());
        }
        loop {
            if let Some(job) = me.slot.take() {
                return job;
            }
            // Unparked once the slot is filled; a park may also end early, hence the loop.
            thread::park();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    const STACK: usize = 64 * 1024;

    #[test]
    fn reuses_threads_and_refuses_past_the_queue() {
        let pool = WorkerPool::new("test-pool", 2, 1, STACK);
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        let blocking_job = |release: crossbeam_channel::Receiver<()>, done: mpsc::Sender<()>| -> Job {
            Box::new(move || {
                release.recv().unwrap();
                done.send(()).unwrap();
            })
        };
        for _ in 0..3 {
            assert!(pool.try_execute(blocking_job(release_rx.clone(), done_tx.clone())).is_ok());
        }
        // two running, one waiting: the fourth is refused
        let refused = pool.try_execute(blocking_job(release_rx.clone(), done_tx.clone()));
        assert_eq!(refused.err().map(|(_, why)| why), Some(Refused::Full));
        for _ in 0..3 {
            release_tx.send(()).unwrap();
            done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        }
        // a job after all is done reuses a thread rather than starting a third
        let (tx, rx) = mpsc::channel();
        pool.try_execute(Box::new(move || tx.send(()).unwrap())).ok().unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(pool.threads(), 2);
    }

    #[test]
    fn load_counts_busy_threads_and_queued_jobs_and_idle_threads_take_the_next_job() {
        let pool = WorkerPool::new("test-pool", 1, 2, STACK);
        let (release_tx, release_rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = mpsc::channel();
        for job in 0..3 {
            let (release, done) = (release_rx.clone(), done_tx.clone());
            pool.try_execute(Box::new(move || {
                release.recv().unwrap();
                done.send(job).unwrap();
            }))
            .ok()
            .unwrap();
        }
        assert_eq!(pool.load(), Load { threads: 1, max_threads: 1, busy: 1, queued: 2 });
        for job in 0..3 {
            release_tx.send(()).unwrap();
            // queued jobs run in the order they came
            assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(job));
        }
        // the worker is back on the idle stack once it has nothing left to run
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while pool.load().busy != 0 {
            assert!(std::time::Instant::now() < deadline, "the worker never went idle");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.load(), Load { threads: 1, max_threads: 1, busy: 0, queued: 0 });
        let (tx, rx) = mpsc::channel();
        pool.try_execute(Box::new(move || tx.send(()).unwrap())).ok().unwrap();
        rx.recv_timeout(Duration::from_secs(5)).unwrap();
    }

    #[test]
    fn a_panicking_job_does_not_kill_its_worker() {
        let pool = WorkerPool::new("test-pool", 1, 4, STACK);
        pool.try_execute(Box::new(|| panic!("job failure on purpose"))).ok().unwrap();
        let (tx, rx) = mpsc::channel();
        pool.try_execute(Box::new(move || tx.send(7).unwrap())).ok().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(7));
        assert_eq!(pool.threads(), 1);
    }
}
