//! What an announced tool definition does to its stored pin: one decision,
//! which each backend carries out in its own SQL.

use warrant_core::audit::Kind;
use warrant_core::mcp::PinOutcome;

/// The step `observe_tool` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PinStep {
    /// Seen for the first time on a server with pins: stored as `new`, the
    /// definition waiting and none approved.
    InsertHeld,
    /// Seen for the first time: pinned.
    InsertPinned,
    /// Never approved, and another definition announced: that one waits now.
    ReplaceHeld,
    /// Never approved, the waiting definition again.
    StillHeld,
    /// The approved definition again: whatever was waiting is moot.
    Repin,
    /// The definition already waiting, again.
    StillChanged,
    /// A definition other than the approved one: it waits for approval.
    MarkChanged,
}

impl PinStep {
    /// The step for `digest` announced, given the stored pin (its approved
    /// digest, state and waiting digest), if any.
    pub(crate) fn decide(
        found: Option<(&str, &str, Option<&str>)>,
        digest: &str,
        hold_new: bool,
    ) -> Self {
        match found {
            None if hold_new => Self::InsertHeld,
            None => Self::InsertPinned,
            Some((_, "new", pending)) if pending == Some(digest) => Self::StillHeld,
            Some((_, "new", _)) => Self::ReplaceHeld,
            Some((pinned, _, _)) if pinned == digest => Self::Repin,
            Some((_, _, pending)) if pending == Some(digest) => Self::StillChanged,
            Some(_) => Self::MarkChanged,
        }
    }

    /// What the caller is told, and the event recorded (none when nothing
    /// an approver must see changed).
    pub(crate) fn outcome(self) -> (PinOutcome, Option<Kind>) {
        match self {
            Self::InsertHeld | Self::ReplaceHeld => (PinOutcome::Held, Some(Kind::McpToolNew)),
            Self::StillHeld => (PinOutcome::Held, None),
            Self::InsertPinned => (PinOutcome::New, Some(Kind::McpToolPin)),
            Self::Repin => (PinOutcome::Unchanged, None),
            Self::StillChanged => (PinOutcome::Changed, None),
            Self::MarkChanged => (PinOutcome::Changed, Some(Kind::McpToolChange)),
        }
    }
}
