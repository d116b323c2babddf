//! Fakes and fixtures for Hearth's tests (dev-dependency only).
#![warn(missing_docs)]
