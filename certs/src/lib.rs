//! Identifiers, certificate profiles and the PKI tooling of splpd.
//!
//! `id` parses the X-Road style identifiers every other part of the gateway uses; `profile` says
//! what a splpd certificate must look like; `pki` runs a region's certificate authority; `inspect`
//! reads any certificate and tells whether it fits the profile.

pub mod facts;
pub mod id;
pub mod inspect;
pub mod load;
pub mod pki;
pub mod profile;
