//! Pod network namespaces, CNI plugins, tap + tc redirect for Hearth.
#![warn(missing_docs)]
