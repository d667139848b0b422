//! Discord's gateway close codes, their reason texts, and which of them end a session.

pub const UNKNOWN_OPCODE: u16 = 4001;
pub const DECODE_ERROR: u16 = 4002;
pub const NOT_AUTHENTICATED: u16 = 4003;
pub const AUTHENTICATION_FAILED: u16 = 4004;
pub const ALREADY_AUTHENTICATED: u16 = 4005;
pub const INVALID_SHARD: u16 = 4010;
pub const SHARDING_REQUIRED: u16 = 4011;
pub const DISALLOWED_INTENTS: u16 = 4014;

/// Discord's reason text for a close code.
pub fn reason(code: u16) -> &'static str {
    match code {
        4000 => "Unknown error.",
        4001 => "Unknown opcode.",
        4002 => "Decode error.",
        4003 => "Not authenticated.",
        4004 => "Authentication failed.",
        4005 => "Already authenticated.",
        4007 => "Invalid seq.",
        4008 => "Rate limited.",
        4009 => "Session timed out.",
        4010 => "Invalid shard.",
        4011 => "Partition required.",
        4012 => "Invalid API version.",
        4013 => "Invalid intent(s).",
        4014 => "Disallowed intent(s).",
        _ => "Closed on request.",
    }
}

/// Codes after which Discord does not resume the session: a new Identify is needed
/// (4007, 4009) or the client must not reconnect at all.
pub fn ends_session(code: u16) -> bool {
    matches!(code, 4004 | 4007 | 4009..=4014)
}

/// Codes a server may send in a close frame (RFC 6455 7.4: not 1004 to 1006, 1015).
pub fn sendable(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}
