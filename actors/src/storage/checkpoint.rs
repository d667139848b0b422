//! WAL checkpoints on a thread of their own, off the writer's path, and a WAL that stays
//! bounded.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`
//! pages, on the committing thread: in a profiled replay it was 12% of the writer thread's time
//! (copying WAL frames into the database file), and the writer is the pipeline's bottleneck.
//! Here a WAL hook on the writer's connection records the WAL's length after each commit, and
//! every `wal_autocheckpoint` new pages the writer wakes a checkpointer thread, whose own
//! connection runs the PASSIVE checkpoint SQLite would have run. A PASSIVE checkpoint never
//! blocks the writer and never waits for readers; what it cannot copy yet, the next one does.
//!
//! A checkpoint copies frames but does not shorten the log: SQLite starts the WAL again from
//! its beginning only when a write begins while every frame is copied and no reader uses the
//! log. With the copying on another thread, a writer that commits back to back hardly ever
//! meets that (measured: a 500 MB WAL after a 248k-event replay, against 12 MB with SQLite's
//! inline checkpoints). So once the log holds [`RESTART_AFTER`] thresholds, the writer itself
//! runs a RESTART checkpoint between two commits, once the thread's current checkpoint is done
//! (two checkpoints never overlap: SQLite refuses the second at once). The thread has copied
//! nearly everything, so it costs little, and the next commit writes the log from its start.
//!
//! Durability is unchanged: the commit (WAL, synchronous=NORMAL) makes a write durable, not
//! the checkpoint. With a threshold of 0 (the StatefulSet's setting: Litestream checkpoints
//! and truncates the WAL), nothing here runs.

use crate::log_limit::LogLimit;
use crate::side_thread::SideThread;
use rusqlite::hooks::Wal;
use rusqlite::Connection;
use std::cell::Cell;
use std::os::raw::c_int;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The WAL is started again (RESTART checkpoint) once it holds this many thresholds of pages:
/// 16,000 pages (64 MiB of 4 KiB pages) at the default of 1000.
const RESTART_AFTER: c_int = 16;

thread_local! {
    /// Pages in the WAL after the last commit of the connection committing on this thread.
    /// The writer's connection is the only one that commits on the writer's thread.
    static WAL_PAGES: Cell<c_int> = const { Cell::new(0) };
}

fn record_wal_pages(_: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_PAGES.with(|p| p.set(pages));
    Ok(())
}

/// The writer's side: [`Checkpoints::committed`] after each commit.
pub(crate) struct Checkpoints {
    /// `wal_autocheckpoint`: new WAL pages between two checkpoints.
    every: c_int,
    /// The WAL's length when the checkpointer was last woken.
    woken_at: c_int,
    /// The checkpointer: woken through its channel, joined when the writer drops this.
    thread: SideThread<SyncSender<()>>,
    /// Held by whichever side checkpoints: the thread, or the writer restarting the log.
    checkpointing: Arc<Mutex<()>>,
    restart_errors: LogLimit,
}

impl Checkpoints {
    /// Installs the WAL hook on the writer's connection (it replaces SQLite's automatic
    /// checkpoint) and starts the checkpointer thread for `database`. `None` if `pages` is 0:
    /// checkpoints are someone else's (Litestream's).
    pub(crate) fn start(
        writer: &Connection,
        database: &Path,
        pages: u32,
    ) -> std::io::Result<Option<Checkpoints>> {
        if pages == 0 {
            return Ok(None);
        }
        // One pending wake-up is enough: a checkpoint copies everything committed before it.
        let (wake, woken) = sync_channel(1);
        let database = database.to_owned();
        let checkpointing = Arc::new(Mutex::new(()));
        let theirs = checkpointing.clone();
        let thread = SideThread::spawn("sqlite-checkpoint", wake, move || {
            checkpoint_when_woken(&database, woken, &theirs)
        })?;
        writer.wal_hook(Some(record_wal_pages));
        Ok(Some(Checkpoints {
            every: pages.min(c_int::MAX as u32 / RESTART_AFTER as u32) as c_int,
            woken_at: 0,
            thread,
            checkpointing,
            restart_errors: LogLimit::new(Duration::from_secs(60)),
        }))
    }

    /// Call on the writer's thread, with the writer's connection, after a commit.
    pub(crate) fn committed(&mut self, writer: &Connection) {
        let pages = WAL_PAGES.with(Cell::get);
        if pages < self.woken_at {
            self.woken_at = 0; // the log started again
        }
        if pages >= self.every * RESTART_AFTER {
            let restarted: rusqlite::Result<(i64, i64, i64)> = {
                let _alone = lock(&self.checkpointing);
                writer.query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
            };
            match restarted {
                // Not busy: the next commit writes the log from its start.
                Ok((0, _, _)) => {
                    WAL_PAGES.with(|p| p.set(0));
                    self.woken_at = 0;
                    return;
                }
                // A reader still uses the log: the next commit tries again.
                Ok(_) => {}
                Err(e) => {
                    if let Some(suppressed) = self.restart_errors.allow() {
                        tracing::warn!(error = %e, suppressed, wal_pages = pages,
                            "restarting the WAL failed; the next commit tries again");
                    }
                }
            }
        }
        if pages - self.woken_at >= self.every {
            // Full: a wake-up is already pending. Disconnected: the thread could not open the
            // database, and said so.
            let _ = self.thread.sender().try_send(());
            self.woken_at = pages;
        }
    }
}

/// The checkpointer thread: a PASSIVE checkpoint per wake-up, until the writer's side is
/// dropped (the pipeline stops).
fn checkpoint_when_woken(database: &PathBuf, woken: Receiver<()>, checkpointing: &Mutex<()>) {
    let conn = match Connection::open(database) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::error!(error = %e, database = %database.display(),
                "the checkpointer cannot open the database; the WAL grows until Litestream or a restart checkpoints it");
            return;
        }
    };
    let mut errors = LogLimit::new(Duration::from_secs(60));
    while woken.recv().is_ok() {
        let result: rusqlite::Result<(i64, i64, i64)> = {
            let _alone = lock(checkpointing);
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
        };
        if let Err(e) = result {
            if let Some(suppressed) = errors.allow() {
                tracing::warn!(error = %e, suppressed, "WAL checkpoint failed; the next commit retries it");
            }
        }
    }
}

fn lock(checkpointing: &Mutex<()>) -> MutexGuard<'_, ()> {
    // It guards no data: a panic while holding it leaves nothing inconsistent.
    checkpointing.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::database::open_writer;

    /// A writer in a fresh file, with SQLite's own checkpoints off as the pipeline sets them.
    fn writer_without_autocheckpoint() -> (tempfile::TempDir, PathBuf, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite3");
        let writer = open_writer(&db).unwrap();
        writer.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        (dir, db, writer)
    }

    /// Commits `rows` rows of ~200 bytes as the writer does, telling the checkpoints.
    fn commit_rows(writer: &mut Connection, checkpoints: &mut Checkpoints, batch: u32, rows: u32) {
        let tx = writer.transaction().unwrap();
        for i in 0..rows {
            tx.execute(
                "INSERT INTO message_cache VALUES (?1, '1', '2', '3', ?2, 't', 't')",
                rusqlite::params![format!("{batch}-{i}"), "x".repeat(200)],
            )
            .unwrap();
        }
        tx.commit().unwrap();
        checkpoints.committed(writer);
    }

    fn wal_bytes(db: &Path) -> u64 {
        std::fs::metadata(format!("{}-wal", db.display())).map_or(0, |m| m.len())
    }

    #[test]
    fn the_thread_checkpoints_what_the_writer_commits_past_the_threshold() {
        let (_dir, db, mut writer) = writer_without_autocheckpoint();
        let mut checkpoints = Checkpoints::start(&writer, &db, 10).unwrap().unwrap();
        let size_before = std::fs::metadata(&db).unwrap().len();
        // Far more than 10 pages, in several commits.
        for batch in 0..20 {
            commit_rows(&mut writer, &mut checkpoints, batch, 200);
        }
        assert!(
            WAL_PAGES.with(Cell::get) >= 10,
            "the hook saw the WAL's pages"
        );
        // The writer never checkpointed (its automatic checkpoint is off): only the thread
        // can have copied the rows into the database file.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::fs::metadata(&db).unwrap().len() < size_before + 800_000 {
            assert!(
                std::time::Instant::now() < deadline,
                "the rows reached the database file within 30 s (WAL {} bytes)",
                wal_bytes(&db)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn the_writer_starts_the_log_again_so_the_wal_stays_bounded() {
        let (_dir, db, mut writer) = writer_without_autocheckpoint();
        // Restarts once the log holds 160 pages (640 KiB).
        let mut checkpoints = Checkpoints::start(&writer, &db, 10).unwrap().unwrap();
        for batch in 0..60 {
            commit_rows(&mut writer, &mut checkpoints, batch, 200);
        }
        let database = std::fs::metadata(&db).unwrap().len();
        // More than 3 MB was logged; the log's file stayed near 160 pages and a commit.
        assert!(database > 3_000_000, "the rows reached the database file");
        assert!(
            wal_bytes(&db) < 1_500_000,
            "the WAL is {} bytes for a {database}-byte database",
            wal_bytes(&db)
        );
    }

    #[test]
    fn the_checkpointer_has_closed_the_database_when_the_writer_lets_it_go() {
        let (_dir, db, mut writer) = writer_without_autocheckpoint();
        let mut checkpoints = Checkpoints::start(&writer, &db, 10).unwrap().unwrap();
        let size_before = std::fs::metadata(&db).unwrap().len();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Until the thread has its connection open and has checkpointed once.
        for batch in 0.. {
            commit_rows(&mut writer, &mut checkpoints, batch, 50);
            if std::fs::metadata(&db).unwrap().len() > size_before {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a checkpoint within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        drop(writer);
        assert!(wal.exists(), "the checkpointer's connection keeps the WAL");
        drop(checkpoints);
        // The last connection to close deletes the WAL: a thread that outlived this drop would
        // delete, by name, the WAL of a database recreated at this path.
        assert!(
            !wal.exists(),
            "the checkpointer closed its connection before the drop returned"
        );
    }

    #[test]
    fn nothing_runs_at_threshold_zero() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db.sqlite3");
        let writer = open_writer(&db).unwrap();
        assert!(Checkpoints::start(&writer, &db, 0).unwrap().is_none());
    }
}
