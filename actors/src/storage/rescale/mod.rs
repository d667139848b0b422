//! A live rescale's SQL: [`event_log`] (the events captured for guilds that arrive, and the
//! waiting ones handed over with them) and [`handoff`] (export, import and removal of the
//! guilds that move). The rules are `domain::rescale`.

pub(crate) mod event_log;
pub(crate) mod handoff;
