//! The replica's event loop: submit what storage and bus queued, wait for completions, route
//! each to its owner, hand finished work to the replica, tick every 10 ms of monotonic time.
//! One thread, one ring, no busy loop: it sleeps in io_uring_enter until something completes
//! (at the latest the tick timeout).

use super::log::{log, Level};
use super::{owner_of, Io, Owner};
use crate::config::TICK_MS;
use crate::io::file_storage::FileStorage;
use crate::io::metrics::{render, MetricsServer, Scrape};
use crate::io::os_time::OsTime;
use crate::io::tcp_bus::TcpBus;
use crate::replica::{Event, Replica, Status};
use crate::state_machine::StateMachine;
use crate::storage::Storage;
use crate::time::Time;
use io_uring::{opcode, types};
use std::sync::atomic::{AtomicBool, Ordering};

pub type LinuxReplica<M> = Replica<FileStorage, TcpBus, OsTime, M>;

pub struct Runtime<M: StateMachine> {
    pub io: Io,
    pub replica: LinuxReplica<M>,
    /// The Prometheus endpoint, when `--metrics` asks for one.
    pub metrics: Option<MetricsServer>,
    timespec: Box<types::Timespec>,
    timer_armed: bool,
    next_tick: u64,
}

impl<M: StateMachine> Runtime<M> {
    pub fn new(io: Io, replica: LinuxReplica<M>) -> Runtime<M> {
        let next_tick = replica.time().monotonic() + TICK_MS * 1_000_000;
        Runtime {
            io,
            replica,
            metrics: None,
            timespec: Box::new(types::Timespec::new()),
            timer_armed: false,
            next_tick,
        }
    }

    fn arm_timer(&mut self) {
        if self.timer_armed {
            return;
        }
        let now = self.replica.time().monotonic();
        let wait = self.next_tick.saturating_sub(now).max(1);
        *self.timespec = types::Timespec::new()
            .sec(wait / 1_000_000_000)
            .nsec((wait % 1_000_000_000) as u32);
        let entry = opcode::Timeout::new(&*self.timespec)
            .build()
            .user_data(super::user_data(Owner::Timer, 0));
        // Safety: the timespec is boxed in the runtime and outlives the operation.
        unsafe { self.io.push(entry) };
        self.timer_armed = true;
    }

    /// One turn of the loop. Returns an error only if the ring itself fails.
    /// One turn of the loop: submit, wait, route completions, then the replica's calls, each
    /// followed by taking its events. Returns an error if the ring fails or the replica cannot
    /// open its data file.
    pub fn run_once(&mut self) -> Result<(), String> {
        let seams = self.replica.seams();
        seams.storage.pump(&mut self.io);
        seams.bus.pump(&mut self.io);
        if let Some(metrics) = &mut self.metrics {
            metrics.pump(&mut self.io);
        }
        self.arm_timer();
        self.io
            .submit_and_wait()
            .map_err(|e| format!("io_uring: {e}"))?;
        for i in 0..self.io.completions().len() {
            let (user_data, result) = self.io.completions()[i];
            let seams = self.replica.seams();
            match owner_of(user_data) {
                Some((Owner::Storage, index)) => {
                    seams.storage.on_cqe(&mut self.io, index as usize, result)
                }
                Some((Owner::Bus, value)) => seams.bus.on_cqe(&mut self.io, value, result),
                Some((Owner::Timer, _)) => self.timer_armed = false,
                Some((Owner::Metrics, value)) => {
                    let metrics = self.metrics.as_mut().expect("a metrics completion");
                    metrics.on_cqe(value, result);
                }
                None => panic!("completion with unknown owner {user_data:#x}"),
            }
        }
        self.metrics_render();
        while let Some(completion) = self.replica.seams().storage.next_completion() {
            self.replica.on_io_completion(completion);
            self.take_events()?;
        }
        while let Some(message) = self.replica.seams().bus.next_received() {
            self.replica.on_message(message);
            self.take_events()?;
        }
        self.tick_due()
    }

    /// Answers every scrape whose request has arrived, from the replica's counters.
    fn metrics_render(&mut self) {
        let Some(metrics) = &mut self.metrics else {
            return;
        };
        while let Some(index) = metrics.next_render() {
            let r = &self.replica;
            let scrape = Scrape {
                status: r.status_now(),
                stats: r.stats(),
                latencies: r.latencies(),
                bus: &r.bus().stats,
                storage: &r.storage().stats,
                server: metrics.stats,
                pool_capacity: r.pool().capacity(),
                pool_available: r.pool().available(),
            };
            render(metrics.response_body(index), &scrape);
            metrics.rendered(index);
        }
    }

    /// Ticks the replica and the bus once per `TICK_MS` elapsed since the last tick.
    fn tick_due(&mut self) -> Result<(), String> {
        let now = self.replica.time().monotonic();
        let mut ticks = 0;
        while self.next_tick <= now {
            self.next_tick += TICK_MS * 1_000_000;
            ticks += 1;
            // After a long stall (suspend, debugger), do not replay hundreds of ticks at once.
            if ticks <= 10 {
                self.replica.tick();
                self.replica.seams().bus.tick();
                if let Some(metrics) = &mut self.metrics {
                    metrics.tick();
                }
                self.take_events()?;
            }
        }
        if ticks > 10 {
            self.next_tick = now + TICK_MS * 1_000_000;
        }
        if ticks > 0 {
            super::log::flush_held();
        }
        Ok(())
    }

    /// Logs the replica's events (info lines always, trace lines when tracing is on); a data
    /// file the replica cannot open ends the run.
    fn take_events(&mut self) -> Result<(), String> {
        while let Some(event) = self.replica.poll_event() {
            match event {
                Event::Info(line) => log(Level::Info, "replica", &line),
                Event::Warn(line) => log(Level::Warn, "replica", &line),
                Event::Trace(line) => log(Level::Debug, "trace", &line),
                Event::OpenFailed(error) => return Err(error.to_string()),
                // For the simulator's checkers.
                Event::CheckpointDurable { .. } | Event::PrepareAcknowledged { .. } => {}
            }
        }
        Ok(())
    }

    /// Runs until `stop` is set (signal handler) or the replica fails to open.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), String> {
        let mut announced = false;
        while !stop.load(Ordering::Relaxed) {
            self.run_once()?;
            if !announced && self.replica.status() != Status::Recovering {
                announced = true;
                let r = &self.replica;
                let line = format!(
                    "replica {} of cluster {} open: status={:?} view={} op={} commit_max={}",
                    r.index(),
                    r.cluster(),
                    r.status(),
                    r.view(),
                    r.op(),
                    r.commit_max()
                );
                log(Level::Info, "replica", &line);
            }
        }
        Ok(())
    }

    /// Runs until the replica has finished recovering (or failed), for tools like `inspect`.
    pub fn run_until_open(&mut self) -> Result<(), String> {
        while self.replica.status() == Status::Recovering {
            self.run_once()?;
        }
        Ok(())
    }
}
