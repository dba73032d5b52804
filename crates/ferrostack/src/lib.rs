//! Wiring of the Ferrostack services into one server. The binary
//! (`main.rs`) only parses the command line and calls [`serve::start`]; the
//! test kit calls the same function.

pub mod serve;
