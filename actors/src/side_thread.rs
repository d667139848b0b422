//! A thread that serves one channel beside the writer (the checkpointer, the completions) and
//! ends with it: dropping the [`SideThread`] closes the channel and joins the thread, so a
//! stopped pipeline leaves no thread behind that still holds the database open.
//!
//! Why joining matters: the last connection to close a WAL database deletes its `-wal` file
//! by name. A checkpointer that outlived its pipeline deleted the WAL of the next pipeline
//! opened on a file recreated at the same path (the benches do that every run), and the next
//! pipeline's readers could not open the database any more.

use std::thread::JoinHandle;

/// The sending side of a channel (`Sender` or `SyncSender`) and the thread that drains it.
pub(crate) struct SideThread<S> {
    sender: Option<S>,
    thread: Option<JoinHandle<()>>,
}

impl<S> SideThread<S> {
    /// Starts `serve` on a thread named `name`; it must return once every sender is dropped.
    pub(crate) fn spawn(
        name: &str,
        sender: S,
        serve: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<SideThread<S>> {
        let thread = std::thread::Builder::new().name(name.into()).spawn(serve)?;
        Ok(SideThread {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    pub(crate) fn sender(&self) -> &S {
        self.sender
            .as_ref()
            .expect("the sender is taken only when the thread is dropped")
    }
}

impl<S> Drop for SideThread<S> {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take() {
            let name = thread.thread().name().unwrap_or("side").to_owned();
            if thread.join().is_err() {
                tracing::error!(thread = %name, "a thread beside the writer panicked");
            }
        }
    }
}
