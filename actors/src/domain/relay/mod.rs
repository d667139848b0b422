//! The relay's domain: what a client of the pod's Discord-compatible gateway is told about the
//! guilds it serves ([`guild_doc`]), when an event may reach it ([`release`]), what a client
//! that resumes is sent again ([`ring`]), and the protocol's frames ([`protocol`]).
//!
//! The plan these serve (issue 20, under way):
//! - discord.js 14 takes its gateway URL only from `GET /gateway/bot` through its REST client;
//!   the bot points that one request at its pod (`rest.makeRequest`), every other REST call
//!   still goes to Discord, and the pod answers with `RELAY_ADDR` (also the
//!   `resume_gateway_url`, naming this pod, never a load-balanced service).
//! - An IDENTIFY is answered at one cut of the released stream: READY listing every owned
//!   guild unavailable, a GUILD_CREATE per guild from its document, then the events released
//!   after the cut, so the snapshot and the stream meet exactly.
//! - An event is released after its rows and those of every earlier event of its guild are
//!   committed; events that write nothing pass at once behind them (interactions are not held
//!   behind a ban waiting for its audit entry: they change no state).
//! - Across a live rescale a pod relays an event of a guild exactly when it applied it as the
//!   guild's owner, which the anchors already make exactly once; the capture log must then
//!   hold every relayed kind, and the old owner's document travels with the export.

pub mod guild_doc;
pub mod protocol;
pub mod release;
pub mod ring;
