//! Cove's authenticators. The default is network trust: every request is
//! anonymous and the network boundary decides who gets in.

pub mod network;

pub use network::NetworkAuthenticator;
