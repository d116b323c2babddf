//! Hearth's core: ids, sandbox state machines, persisted state, effect traits.
#![warn(missing_docs)]
