//! The relay's domain: what a client of the pod's Discord-compatible gateway is told about the
//! guilds it serves ([`guild_doc`]), when an event may reach it ([`release`]), and what a
//! client that resumes is sent again ([`ring`]).

pub mod guild_doc;
pub mod release;
pub mod ring;
