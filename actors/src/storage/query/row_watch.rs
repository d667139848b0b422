//! SQLite's pre-update hook, for the guarded writes: it is called before every row a statement
//! inserts, updates or deletes (an upsert's update, a REPLACE's deletion and a DELETE without
//! WHERE included), with the row as it was and as it will be.
//!
//! Registered through the C API: rusqlite's wrapper needs its `preupdate_hook` feature, which
//! regenerates the bindings with bindgen (and so libclang on every build machine), while the
//! bundled bindings already declare these functions. The bundled SQLite is compiled with
//! `SQLITE_ENABLE_PREUPDATE_HOOK` by `.cargo/config.toml`; without it the symbols are missing
//! and the build fails to link, never silently unguarded.

use rusqlite::ffi;
use rusqlite::Connection;
use std::ffi::{c_char, c_int, c_void, CStr};

/// One changed row, as the hook sees it.
pub(super) struct RowChange<'a> {
    /// The schema ("main", "temp", or an attached one).
    pub db: &'a str,
    pub table: &'a str,
    db_handle: *mut ffi::sqlite3,
    op: c_int,
}

impl RowChange<'_> {
    /// Column `position` of the row before (DELETE, UPDATE) and after (INSERT, UPDATE) the
    /// change, as text (an integer by its digits; anything else is None).
    pub(super) fn values(&self, position: i32) -> Vec<Option<String>> {
        let mut values = Vec::with_capacity(2);
        if self.op == ffi::SQLITE_DELETE || self.op == ffi::SQLITE_UPDATE {
            values.push(self.read(position, ffi::sqlite3_preupdate_old));
        }
        if self.op == ffi::SQLITE_INSERT || self.op == ffi::SQLITE_UPDATE {
            values.push(self.read(position, ffi::sqlite3_preupdate_new));
        }
        values
    }

    fn read(
        &self,
        position: i32,
        accessor: unsafe extern "C" fn(
            *mut ffi::sqlite3,
            c_int,
            *mut *mut ffi::sqlite3_value,
        ) -> c_int,
    ) -> Option<String> {
        let mut value: *mut ffi::sqlite3_value = std::ptr::null_mut();
        // SAFETY: called only inside the hook, with the connection SQLite passed it and a
        // column index checked by SQLite (an out-of-range one returns SQLITE_RANGE).
        unsafe {
            if accessor(self.db_handle, position, &mut value) != ffi::SQLITE_OK || value.is_null() {
                return None;
            }
            match ffi::sqlite3_value_type(value) {
                ffi::SQLITE_INTEGER => Some(ffi::sqlite3_value_int64(value).to_string()),
                ffi::SQLITE_TEXT => {
                    let text = ffi::sqlite3_value_text(value);
                    let len = ffi::sqlite3_value_bytes(value);
                    if text.is_null() || len < 0 {
                        return None;
                    }
                    let bytes = std::slice::from_raw_parts(text, len as usize);
                    Some(String::from_utf8_lossy(bytes).into_owned())
                }
                _ => None,
            }
        }
    }
}

type Callback = Box<dyn FnMut(&RowChange<'_>) + 'static>;

/// The hook, registered on a connection while this value lives.
pub(super) struct RowWatch<'c> {
    conn: &'c Connection,
    /// Owned here, pointed to by SQLite until the hook is removed in `drop`.
    callback: *mut Callback,
}

impl<'c> RowWatch<'c> {
    /// Calls `f` before every row change on `conn` until the returned value is dropped.
    pub(super) fn install(conn: &'c Connection, f: impl FnMut(&RowChange<'_>) + 'static) -> Self {
        let callback: *mut Callback = Box::into_raw(Box::new(Box::new(f)));
        // SAFETY: the handle is the live connection's; the context pointer stays valid until
        // `drop` unregisters the hook and frees it, and the connection outlives `self`.
        unsafe {
            ffi::sqlite3_preupdate_hook(conn.handle(), Some(trampoline), callback.cast());
        }
        RowWatch { conn, callback }
    }
}

impl Drop for RowWatch<'_> {
    fn drop(&mut self) {
        // SAFETY: unregister first, so SQLite no longer holds the pointer, then free it.
        unsafe {
            ffi::sqlite3_preupdate_hook(self.conn.handle(), None, std::ptr::null_mut());
            drop(Box::from_raw(self.callback));
        }
    }
}

unsafe extern "C" fn trampoline(
    context: *mut c_void,
    db_handle: *mut ffi::sqlite3,
    op: c_int,
    db: *const c_char,
    table: *const c_char,
    _old_rowid: ffi::sqlite3_int64,
    _new_rowid: ffi::sqlite3_int64,
) {
    // A panic must not unwind into SQLite's C frames.
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: SQLite passes the context registered in `install` and NUL-terminated names.
        let (callback, db, table) = unsafe {
            (
                &mut *context.cast::<Callback>(),
                CStr::from_ptr(db).to_string_lossy(),
                CStr::from_ptr(table).to_string_lossy(),
            )
        };
        callback(&RowChange {
            db: &db,
            table: &table,
            db_handle,
            op,
        });
    }));
}
