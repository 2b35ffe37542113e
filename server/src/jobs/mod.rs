//! Background jobs of a serving process. Each is a component built with
//! explicit handles (registry, guard, metrics) and started by a `spawn…`
//! call that returns its task handle; [`Jobs`] holds them and stops them at
//! shutdown. Nothing here knows about HTTP.

pub mod activity;
pub mod gc;
pub mod keys;
pub mod maintenance;
pub mod prefetch;
pub mod repo_index;
pub mod retention;
pub mod tls_watch;
pub mod uploads;

use tokio::task::JoinHandle;

/// The tasks of the running jobs; dropping it does not stop them, [`Jobs::stop`] does.
#[derive(Default)]
pub struct Jobs(Vec<JoinHandle<()>>);

impl Jobs {
    /// Adds a started job.
    pub fn add(&mut self, task: JoinHandle<()>) {
        self.0.push(task);
    }

    /// Stops every job (at shutdown).
    pub fn stop(self) {
        for task in self.0 {
            task.abort();
        }
    }
}
