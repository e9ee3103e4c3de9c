//! One lifecycle for every background task of a process.
//!
//! A node runs tasks beside its requests: the write-behind, the Redis
//! watch, reconciliation, the Pub/Sub reader, the live pusher, load runs,
//! housekeeping. Each is spawned here, on a tracker owned by the
//! application, with a cancellation token it must honour; each exit
//! (clean, error or panic) is logged with the task's name; and shutdown
//! stops them in a fixed order with a deadline, so no task is left running
//! unowned and no result is silently dropped.
//!
//! The order is by [`Stage`]: first the tasks that serve or watch (nothing
//! they hold needs saving), then the tasks that make accepted work durable,
//! which finish what they hold before they exit. The HTTP server has
//! stopped, and its in-flight requests have been answered, before either.

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// When a task is stopped at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Stopped first: live push, Pub/Sub reader, Redis watch,
    /// reconciliation, load runs, housekeeping.
    Serve,
    /// Stopped last, and each finishes what it holds: the write-behind's
    /// current round, the embedded writer's queue.
    Persist,
}

/// A tracker and a token per stage. Cheap to clone; clones share them.
#[derive(Clone, Default)]
pub struct Tasks {
    serve: Group,
    persist: Group,
}

#[derive(Clone, Default)]
struct Group {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    fn group(&self, stage: Stage) -> &Group {
        match stage {
            Stage::Serve => &self.serve,
            Stage::Persist => &self.persist,
        }
    }

    /// The token that `stage`'s tasks watch.
    pub fn token(&self, stage: Stage) -> CancellationToken {
        self.group(stage).cancel.clone()
    }

    /// Spawns a named task of `stage`. `task` gets the stage's token and
    /// must return soon after it is cancelled. Its exit is logged: clean
    /// (info), with an error (error) or by a panic (error, with the
    /// message); a panic does not take the process down.
    pub fn spawn<F, Fut, E>(&self, stage: Stage, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        let group = self.group(stage);
        let cancel = group.cancel.clone();
        let fut = task(cancel.clone());
        group.tracker.spawn(async move {
            match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(())) => tracing::info!(
                    task = name,
                    at_shutdown = cancel.is_cancelled(),
                    "task finished"
                ),
                Ok(Err(err)) => tracing::error!(task = name, error = %err, "task failed"),
                Err(panic) => tracing::error!(
                    task = name,
                    panic = panic_message(panic.as_ref()),
                    "task panicked"
                ),
            }
        });
    }

    /// Spawns a small unnamed task of `stage` (a timer, say) that is
    /// dropped when the stage is cancelled; its exit is not logged.
    pub fn spawn_quiet(&self, stage: Stage, fut: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.group(stage).cancel.clone();
        self.group(stage).tracker.spawn(async move {
            tokio::select! {
                () = fut => {}
                () = cancel.cancelled() => {}
            }
        });
    }

    /// Cancels every stage at once, without waiting.
    pub fn cancel(&self) {
        self.serve.cancel.cancel();
        self.persist.cancel.cancel();
    }

    /// A guard that cancels every stage when dropped: for an owner that may
    /// be dropped without [`Tasks::shutdown`] (a build that fails halfway,
    /// an application that is never run), so that no task outlives it.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.clone())
    }

    /// Stops every task, stage by stage, giving each stage up to
    /// `deadline` to finish. Returns false if a stage was still running at
    /// its deadline (its tasks are then abandoned to the runtime's end).
    pub async fn shutdown(&self, deadline: Duration) -> bool {
        let mut all = true;
        for (stage, group) in [(Stage::Serve, &self.serve), (Stage::Persist, &self.persist)] {
            group.cancel.cancel();
            group.tracker.close();
            if tokio::time::timeout(deadline, group.tracker.wait())
                .await
                .is_err()
            {
                tracing::error!(
                    ?stage,
                    running = group.tracker.len(),
                    ?deadline,
                    "tasks still running at the shutdown deadline"
                );
                all = false;
            }
        }
        all
    }
}

/// See [`Tasks::cancel_on_drop`].
pub struct CancelOnDrop(Tasks);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(not a string)".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn stops_serve_tasks_before_persist_tasks() {
        let tasks = Tasks::new();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        for (stage, name) in [(Stage::Persist, "persist"), (Stage::Serve, "serve")] {
            let order = order.clone();
            tasks.spawn(stage, name, move |cancel| async move {
                cancel.cancelled().await;
                // The persist task takes a while to finish what it holds.
                if name == "persist" {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                order.lock().unwrap().push(name);
                Ok::<_, std::convert::Infallible>(())
            });
        }
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert_eq!(*order.lock().unwrap(), ["serve", "persist"]);
    }

    #[tokio::test]
    async fn a_panic_or_an_error_is_contained_and_the_rest_still_stops() {
        let tasks = Tasks::new();
        let finished = Arc::new(AtomicUsize::new(0));
        tasks.spawn(Stage::Serve, "panics", |_| async {
            panic!("boom");
            #[allow(unreachable_code)]
            Ok::<_, String>(())
        });
        tasks.spawn(Stage::Serve, "fails", |_| async {
            Err("broken".to_owned())
        });
        let f = finished.clone();
        tasks.spawn(Stage::Persist, "waits", move |cancel| async move {
            cancel.cancelled().await;
            f.fetch_add(1, Ordering::SeqCst);
            Ok::<_, String>(())
        });
        assert!(tasks.shutdown(Duration::from_secs(5)).await);
        assert_eq!(finished.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn dropping_the_guard_stops_the_tasks() {
        let tasks = Tasks::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tasks.spawn(Stage::Persist, "waits", move |cancel| async move {
            cancel.cancelled().await;
            let _ = tx.send(());
            Ok::<_, String>(())
        });
        drop(tasks.cancel_on_drop());
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("the task saw the cancellation")
            .expect("sent");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ignores_its_token_meets_the_deadline() {
        let tasks = Tasks::new();
        tasks.spawn(Stage::Serve, "stubborn", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, String>(())
        });
        assert!(!tasks.shutdown(Duration::from_secs(1)).await);
    }
}
