//! A bounded pool of reusable worker threads fed through a crossbeam channel.
//!
//! Threads are started lazily, up to `max_threads`, and kept once started: a worker that
//! finishes a job waits for the next. When every thread is busy a job waits in the channel,
//! up to `max_waiting` of them; past that `try_execute` hands the job back so the caller can
//! refuse its client instead of blocking or growing without bound.

use crossbeam_channel::{Receiver, Sender, unbounded};
use std::sync::{Arc, Mutex, MutexGuard};

pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct WorkerPool {
    name: &'static str,
    max_threads: usize,
    max_waiting: usize,
    stack_size: usize,
    jobs: Sender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    jobs: Receiver<Job>,
    counts: Mutex<Counts>,
}

/// Kept under one lock so that "is a thread free for this job" is never answered from
/// counters caught half-way through an update.
#[derive(Default)]
struct Counts {
    threads: usize,
    /// Threads not running a job: waiting for one, or about to.
    idle: usize,
    /// Jobs sent but not yet taken by a thread.
    queued: usize,
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
        let (jobs, receiver) = unbounded();
        WorkerPool {
            name,
            max_threads: max_threads.max(1),
            max_waiting,
            stack_size,
            jobs,
            shared: Arc::new(Shared { jobs: receiver, counts: Mutex::new(Counts::default()) }),
        }
    }

    /// Runs `job` on a free thread, starting one if none is free and the limit allows, or
    /// queues it; hands it back when the queue is full or no thread can be started.
    pub(crate) fn try_execute(&self, job: Job) -> Result<(), (Job, Refused)> {
        let mut counts = self.shared.lock();
        let waiting = (counts.queued + 1).saturating_sub(counts.idle);
        if waiting > 0 && counts.threads < self.max_threads {
            match self.spawn_worker() {
                Ok(()) => {
                    counts.threads += 1;
                    counts.idle += 1;
                }
                Err(_) if counts.threads == 0 => return Err((job, Refused::NoThread)),
                Err(e) => {
                    log::warn!("{}: cannot start another thread ({e}); queueing", self.name);
                    if waiting > self.max_waiting {
                        return Err((job, Refused::NoThread));
                    }
                }
            }
        } else if waiting > self.max_waiting {
            return Err((job, Refused::Full));
        }
        counts.queued += 1;
        self.jobs.send(job).expect("the pool holds its own receiver");
        Ok(())
    }

    fn spawn_worker(&self) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        std::thread::Builder::new()
            .name(self.name.to_owned())
            .stack_size(self.stack_size)
            .spawn(move || shared.work())
            .map(drop)
    }

    /// Threads started so far.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.shared.lock().threads
    }

    /// How loaded the pool is now.
    pub(crate) fn load(&self) -> Load {
        let counts = self.shared.lock();
        Load {
            threads: counts.threads,
            max_threads: self.max_threads,
            busy: counts.threads - counts.idle.min(counts.threads),
            queued: counts.queued.saturating_sub(counts.idle),
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Counts> {
        // A job runs outside the lock, so a poisoned lock only means a panic between two
        // counter updates; the counts are still the best we have.
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn work(&self) {
        super::stack::remember_this_thread();
        while let Ok(job) = self.jobs.recv() {
            {
                let mut counts = self.lock();
                counts.queued -= 1;
                counts.idle -= 1;
            }
            // A panicking job must not shrink the pool: catch it here, report it, go on.
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                log::error!("a worker job panicked; the worker carries on");
            }
            self.lock().idle += 1;
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
    fn a_panicking_job_does_not_kill_its_worker() {
        let pool = WorkerPool::new("test-pool", 1, 4, STACK);
        pool.try_execute(Box::new(|| panic!("job failure on purpose"))).ok().unwrap();
        let (tx, rx) = mpsc::channel();
        pool.try_execute(Box::new(move || tx.send(7).unwrap())).ok().unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(7));
        assert_eq!(pool.threads(), 1);
    }
}
