//! hearthd
